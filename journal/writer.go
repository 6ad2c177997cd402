package journal

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Defaults of a Writer's knobs.
const (
	// DefaultSegmentSize is the size past which a Writer starts a new segment.
	DefaultSegmentSize = 64 << 20
	// DefaultLockTimeout is how long Open waits for another writer of the same
	// agent (in this or another process, in any language) to let go of the
	// journal.
	DefaultLockTimeout = 10 * time.Second
)

// Permissions of what the client creates, before the process umask applies.
// Group bits let agents that share a group, and the watcher, work in the same
// state directory; the umask narrows them (docs/operations.md).
const (
	DirMode  = 0o775
	FileMode = 0o664
)

var (
	// ErrClosed is returned when using a closed Writer.
	ErrClosed = errors.New("journal: closed")
	// ErrLocked is returned when another writer holds an agent's journal.
	ErrLocked = errors.New("journal: journal is locked by another writer")
	// ErrSeqExhausted is returned by Append when the journal's last seq is
	// the largest uint64: there is no next one, and a seq never wraps.
	ErrSeqExhausted = errors.New("journal: no seq left")
)

// LockName is the advisory lock file inside an agent's journal folder, taken
// with flock by writers that can (never deleted). It is not a segment and the
// watcher ignores it.
const LockName = ".lock"

// Writer appends intents to one agent's journal, journal/<agent>/ under a
// state directory. One Writer per agent may be open at a time, across
// processes and languages: Open binds the journal folder's abstract Unix
// socket (WriterAddress) and takes flock on its .lock file (docs/format.md,
// "Writers"); both go when the process dies, so a killed writer never
// wedges the next one.
//
// A Writer is safe for concurrent use.
type Writer struct {
	SegmentSize int64         // start a new segment past this size; set by NewWriter
	LockTimeout time.Duration // how long Open waits for the lock (<= 0: no wait); set by NewWriter
	MaxLine     int           // longest line Append writes; set by NewWriter to DefaultMaxLine

	dir   string // state directory
	agent string
	path  string // journal/<agent>

	mu      sync.Mutex // guards the fields below
	lock    *writerLock
	f       *os.File // newest segment, O_APPEND
	size    int64    // its size
	lastSeq uint64   // seq of the last record written
	nextMin uint64   // lowest seq allowed next (an empty newest segment names it)
	closed  bool

	// syncDir is called to make a new directory entry durable; tests replace
	// it to inject faults.
	syncDir func(path string) error
}

// NewWriter returns a Writer for agent's journal in the state directory dir.
// Call Open before Append.
func NewWriter(dir, agent string) *Writer {
	return &Writer{
		SegmentSize: DefaultSegmentSize,
		LockTimeout: DefaultLockTimeout,
		MaxLine:     DefaultMaxLine,
		dir:         dir,
		agent:       agent,
		path:        filepath.Join(dir, "journal", agent),
		syncDir:     SyncDir,
	}
}

// OpenWriter returns an open Writer with the default settings.
func OpenWriter(dir, agent string) (*Writer, error) {
	w := NewWriter(dir, agent)
	if err := w.Open(); err != nil {
		return nil, err
	}
	return w, nil
}

// Open creates the journal folder if needed, takes the journal's lock,
// repairs a torn tail (a last line without "\n" was never acknowledged, so it
// is cut off) and positions the writer after the last record.
func (w *Writer) Open() error {
	if err := CheckAgentName(w.agent); err != nil {
		return err
	}
	if w.SegmentSize <= 0 {
		return fmt.Errorf("journal: segment size must be > 0, got %d", w.SegmentSize)
	}
	if err := mkdirDurable(w.path, w.syncDir); err != nil {
		return err
	}
	lk, err := w.lockWithin()
	if err != nil {
		return err
	}
	if err := w.recover(); err != nil {
		lk.unlock()
		return err
	}
	w.lock = lk
	return nil
}

// lockWithin takes the journal's locks, trying every 20 ms for up to
// LockTimeout (one try when LockTimeout <= 0).
func (w *Writer) lockWithin() (*writerLock, error) {
	deadline := time.Now().Add(w.LockTimeout)
	for {
		lk, err := lockWriter(w.path)
		if err == nil {
			return lk, nil
		}
		if !errors.Is(err, errBusy) {
			return nil, err
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("%w: agent %q, folder %s (waited %s; is another process writing as agent %q?)", ErrLocked, w.agent, w.path, max(w.LockTimeout, 0), w.agent)
		}
		time.Sleep(min(20*time.Millisecond, time.Until(deadline)))
	}
}

// recover finds the newest segment, cuts a torn tail and reads the last seq.
func (w *Writer) recover() error {
	segs, err := ListSegments(w.path)
	if err != nil {
		return err
	}
	if len(segs) == 0 {
		w.nextMin = 1
		return nil
	}
	for i := len(segs) - 1; i >= 0; i-- {
		p := filepath.Join(w.path, SegmentName(segs[i]))
		f, err := os.OpenFile(p, os.O_RDWR|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("open segment %s: %w", p, err)
		}
		end, seq, err := LastSeq(f)
		if err != nil {
			f.Close()
			if w.f != nil {
				w.f.Close()
				w.f = nil
			}
			return fmt.Errorf("read segment %s: %w", p, err)
		}
		if i == len(segs)-1 {
			fi, err := f.Stat()
			if err != nil {
				f.Close()
				return fmt.Errorf("stat segment %s: %w", p, err)
			}
			if fi.Size() > end {
				// A torn tail: its Append never returned, so nobody was told
				// it was written. Cut it before writing after it.
				if err := f.Truncate(end); err != nil {
					f.Close()
					return fmt.Errorf("truncate torn tail of %s at %d: %w", p, end, err)
				}
				if err := f.Sync(); err != nil {
					f.Close()
					return fmt.Errorf("sync %s: %w", p, err)
				}
			}
			w.f, w.size = f, end
			w.nextMin = segs[i]
		} else {
			f.Close()
		}
		if seq > 0 {
			w.lastSeq = seq
			return nil
		}
	}
	return nil
}

// LastSeq returns the seq of the last record in the journal (0 if none).
func (w *Writer) LastSeq() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastSeq
}

// Append assigns the next seq to in (unless in.Seq is set, which must then be
// greater than the last), writes it as one line with a single write(2) and
// fsyncs it. When Append returns nil the record is durable, and it returns
// the record as written. A seq never wraps: once a record has the largest
// seq (2^64-1), Append returns ErrSeqExhausted.
//
// A failed write or fsync leaves the Writer closed: the kernel may have
// dropped the data, so the state of the tail is unknown until Open repairs it.
func (w *Writer) Append(in Intent) (Intent, error) {
	out, err := w.AppendBatch([]Intent{in})
	if err != nil {
		return Intent{}, err
	}
	return out[0], nil
}

// AppendBatch appends several intents with one write and one fsync, for
// agents that pipeline. It is all or nothing from the caller's side: on error
// none of them is acknowledged (some may still be processed after a crash,
// exactly once each).
func (w *Writer) AppendBatch(ins []Intent) ([]Intent, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.lock == nil {
		return nil, ErrClosed
	}
	if len(ins) == 0 {
		return nil, nil // nothing to write (and no out[0] to name a segment by)
	}
	out := slices.Clone(ins)
	var buf []byte
	// A seq never wraps: after the largest, there is no next one.
	next, full := max(w.lastSeq+1, w.nextMin), w.lastSeq == math.MaxUint64
	for i := range out {
		switch {
		case full:
			return nil, fmt.Errorf("%w: the journal of agent %q reached seq %d, the largest there is: write as a new agent", ErrSeqExhausted, w.agent, uint64(math.MaxUint64))
		case out[i].Seq == 0:
			out[i].Seq = next
		case out[i].Seq < next:
			return nil, fmt.Errorf("%w: seq %d is not greater than the last seq %d", ErrBadRecord, out[i].Seq, next-1)
		}
		full, next = out[i].Seq == math.MaxUint64, out[i].Seq+1
		line, err := out[i].MarshalLine()
		if err != nil {
			return nil, err
		}
		if len(line) > w.MaxLine {
			return nil, fmt.Errorf("%w: line of %d bytes is longer than the limit of %d (the watcher would reject it)", ErrBadRecord, len(line), w.MaxLine)
		}
		buf = append(buf, line...)
	}
	if w.f == nil || (w.size > 0 && w.size+int64(len(buf)) > w.SegmentSize) {
		if err := w.rotate(out[0].Seq); err != nil {
			return nil, err
		}
	}
	n, err := w.f.Write(buf)
	w.size += int64(n)
	if err != nil {
		w.fail()
		return nil, fmt.Errorf("append to journal %s: %w", w.path, err)
	}
	if err := w.f.Sync(); err != nil {
		w.fail()
		return nil, fmt.Errorf("sync journal %s: %w", w.path, err)
	}
	w.lastSeq = out[len(out)-1].Seq
	return out, nil
}

// rotate starts a new segment whose first record will have seq first, and
// makes its directory entry durable before anything is written to it.
func (w *Writer) rotate(first uint64) error {
	p := filepath.Join(w.path, SegmentName(first))
	f, err := os.OpenFile(p, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_EXCL, FileMode)
	if err != nil {
		return fmt.Errorf("create segment %s: %w", p, err)
	}
	if err := w.syncDir(w.path); err != nil {
		f.Close()
		w.fail()
		return fmt.Errorf("sync journal folder %s: %w", w.path, err)
	}
	if w.f != nil {
		w.f.Close()
	}
	w.f, w.size, w.nextMin = f, 0, first
	return nil
}

// fail closes the writer after an error that leaves the tail unknown.
func (w *Writer) fail() {
	w.closed = true
	if w.f != nil {
		w.f.Close()
	}
	if w.lock != nil {
		w.lock.unlock()
	}
}

// Close releases the journal.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	var err error
	if w.f != nil {
		err = w.f.Close()
	}
	if w.lock != nil {
		if uerr := w.lock.unlock(); err == nil {
			err = uerr
		}
	}
	return err
}

// ListSegments returns the first seqs of the segments in folder, in order.
// Other files (the lock, temporary files) are ignored. A missing folder has
// no segments.
func ListSegments(folder string) ([]uint64, error) {
	ents, err := os.ReadDir(folder)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list segments in %s: %w", folder, err)
	}
	return Segments(ents), nil
}

// Segments returns the first seqs of the segments among a folder's
// entries, in order: regular files named as segments, nothing else.
func Segments(ents []fs.DirEntry) []uint64 {
	var segs []uint64
	for _, e := range ents {
		if n, ok := ParseSegmentName(e.Name()); ok && e.Type().IsRegular() {
			segs = append(segs, n)
		}
	}
	slices.Sort(segs)
	return segs
}

// SyncDir fsyncs a directory, making the entries created or renamed in it
// durable.
func SyncDir(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// mkdirDurable creates path and any missing parents with DirMode, fsyncing
// each parent whose entries it changed.
func mkdirDurable(path string, syncDir func(string) error) error {
	if fi, err := os.Stat(path); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("create folder %s: not a directory", path)
		}
		return nil
	}
	parent := filepath.Dir(path)
	if parent != path {
		if err := mkdirDurable(parent, syncDir); err != nil {
			return err
		}
	}
	if err := os.Mkdir(path, DirMode); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create folder %s: %w", path, err)
	}
	if err := syncDir(parent); err != nil {
		return fmt.Errorf("sync folder %s: %w", parent, err)
	}
	return nil
}

var _ io.Closer = (*Writer)(nil)
