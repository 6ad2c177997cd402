// One writer per agent name, across processes and languages (docs/format.md,
// "Writers"): an abstract Unix socket named after the journal folder's
// device and inode, padded with NUL bytes to the whole 108-byte sun_path,
// plus flock on the folder's .lock where the runtime can take it (Bun, via
// bun:ffi; Node has no flock). The kernel releases both when the process
// dies, so a writer killed by SIGKILL leaves nothing to wait out.

import { promises as fsp, constants as fsc } from "node:fs";
import net from "node:net";
import path from "node:path";

/** Size of sun_path in Linux's sockaddr_un. */
export const SUN_PATH_LEN = 108;

/** The lock file in an agent's journal folder (never deleted). */
export const LOCK_NAME = ".lock";

/**
 * The abstract socket name a writer of the journal folder binds, as a
 * string of SUN_PATH_LEN characters starting with "\0".
 */
export async function writerAddress(folder: string): Promise<string> {
  const st = await fsp.stat(folder, { bigint: true });
  const name = `\0stateward-writer/${BigInt.asUintN(64, st.dev)}/${BigInt.asUintN(64, st.ino)}`;
  return name + "\0".repeat(SUN_PATH_LEN - name.length);
}

/** A held writer lock. */
export interface WriterLock {
  release(): Promise<void>;
}

/** Thrown by tryLock when another writer holds the folder. */
export class Busy extends Error {}

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";

/**
 * Takes both locks of the journal folder or neither; throws Busy when
 * another writer holds one of them. The folder must exist.
 */
export async function tryLock(folder: string): Promise<WriterLock> {
  const lockPath = path.join(folder, LOCK_NAME);
  const fh = await fsp.open(lockPath, fsc.O_RDONLY | fsc.O_CREAT, 0o664);
  let held = false;
  try {
    const addr = await writerAddress(folder);
    if (!isBun) return await nodeLock(addr);
    const lock = await bunLock(fh.fd, addr, fh);
    held = true;
    return lock;
  } finally {
    if (!held) await fh.close();
  }
}

/**
 * Reports whether a socket of this network namespace is bound to the
 * abstract name addr: /proc/net/unix lists it last on its line, with "@"
 * for each NUL byte. False if the table cannot be read.
 */
export async function nameBound(addr: string): Promise<boolean> {
  const shown = " " + addr.replace(/\0/g, "@");
  let table: string;
  try {
    table = await fsp.readFile("/proc/net/unix", "utf8");
  } catch {
    return false;
  }
  return table.split("\n").some((line) => line.endsWith(shown));
}

/**
 * Reports whether a flock lock is held on the file fh: /proc/locks lists
 * it as "FLOCK ... PID MAJ:MIN:INODE" (major and minor in hex). False if
 * the table cannot be read.
 */
export async function flockHeld(fh: fsp.FileHandle): Promise<boolean> {
  const st = await fh.stat({ bigint: true });
  const major = ((st.dev >> 8n) & 0xfffn) | ((st.dev >> 32n) & ~0xfffn);
  const minor = (st.dev & 0xffn) | ((st.dev >> 12n) & ~0xffn);
  const hex = (n: bigint) => n.toString(16).padStart(2, "0");
  const id = `${hex(major)}:${hex(minor)}:${st.ino}`;
  let table: string;
  try {
    table = await fsp.readFile("/proc/locks", "utf8");
  } catch {
    return false;
  }
  return table.split("\n").some((line) => {
    const f = line.trim().split(/\s+/);
    const i = f.indexOf("FLOCK");
    return i >= 0 && f[i + 4] === id;
  });
}

function nodeLock(addr: string): Promise<WriterLock> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", (err: NodeJS.ErrnoException) => {
      reject(err.code === "EADDRINUSE" ? new Busy() : err);
    });
    server.listen({ path: addr, exclusive: true, backlog: 1 }, () => {
      server.unref(); // holding the name must not keep the process alive
      server.on("connection", (c) => c.destroy());
      resolve({
        release: () => new Promise<void>((res) => server.close(() => res())),
      });
    });
  });
}

// bun:ffi: Bun's node:net refuses a 108-byte abstract name (EINVAL), so the
// socket is made with libc directly; flock comes from libc too.
interface Libc {
  socket(domain: number, type: number, proto: number): number;
  bind(fd: number, addr: unknown, len: number): number;
  listen(fd: number, backlog: number): number;
  close(fd: number): number;
  flock(fd: number, op: number): number;
  __errno_location(): unknown;
}
let libc: { symbols: Libc; read: { i32(p: unknown, off: number): number }; ptr(b: Uint8Array): unknown } | undefined;

async function loadLibc() {
  if (libc) return libc;
  const modName = "bun:ffi";
  const ffi = await import(modName);
  const T = ffi.FFIType;
  const lib = ffi.dlopen("libc.so.6", {
    socket: { args: [T.i32, T.i32, T.i32], returns: T.i32 },
    bind: { args: [T.i32, T.ptr, T.u32], returns: T.i32 },
    listen: { args: [T.i32, T.i32], returns: T.i32 },
    close: { args: [T.i32], returns: T.i32 },
    flock: { args: [T.i32, T.i32], returns: T.i32 },
    __errno_location: { args: [], returns: T.ptr },
  });
  libc = { symbols: lib.symbols as Libc, read: ffi.read, ptr: ffi.ptr };
  return libc;
}

const AF_UNIX = 1, SOCK_STREAM = 1, SOCK_CLOEXEC = 0o2000000;
const LOCK_EX = 2, LOCK_NB = 4, LOCK_UN = 8;
const EADDRINUSE = 98, EWOULDBLOCK = 11, EINTR = 4;

async function bunLock(lockFd: number, addr: string, lockHandle: fsp.FileHandle): Promise<WriterLock> {
  const c = await loadLibc();
  const errno = () => c.read.i32(c.symbols.__errno_location(), 0);
  const sa = new Uint8Array(2 + SUN_PATH_LEN);
  sa[0] = AF_UNIX; // sa_family, little-endian
  for (let i = 0; i < addr.length; i++) sa[2 + i] = addr.charCodeAt(i);
  const fd = c.symbols.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new Error(`stateward: socket: errno ${errno()}`);
  // errno is read by a second FFI call, after the runtime may have run
  // code of its own that changed it: a failure is also taken as Busy when
  // the lock is seen held (the name bound, the flock listed).
  if (c.symbols.bind(fd, c.ptr(sa), sa.length) !== 0) {
    const e = errno();
    c.symbols.close(fd);
    if (e === EADDRINUSE || (await nameBound(addr))) throw new Busy();
    throw new Error(`stateward: bind writer socket: errno ${e}`);
  }
  if (c.symbols.listen(fd, 1) !== 0) {
    const e = errno();
    c.symbols.close(fd);
    throw new Error(`stateward: listen on writer socket: errno ${e}`);
  }
  let r = c.symbols.flock(lockFd, LOCK_EX | LOCK_NB);
  for (let i = 0; r !== 0 && i < 100 && errno() === EINTR; i++) r = c.symbols.flock(lockFd, LOCK_EX | LOCK_NB);
  if (r !== 0) {
    const e = errno();
    c.symbols.close(fd);
    if (e === EWOULDBLOCK || (await flockHeld(lockHandle))) throw new Busy();
    throw new Error(`stateward: flock ${LOCK_NAME}: errno ${e}`);
  }
  return {
    async release() {
      c.symbols.flock(lockFd, LOCK_UN);
      await lockHandle.close();
      c.symbols.close(fd);
    },
  };
}
