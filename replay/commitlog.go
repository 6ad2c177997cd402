package replay

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"path"
	"strconv"

	"github.com/stateward/stateward/journal"
)

// ErrCorruptLog is returned when a commit record other than the last one is
// damaged: the log cannot be trusted past it and recovery stops.
var ErrCorruptLog = errors.New("replay: commit log is corrupt")

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// commitRecord is one line of the commit log: everything one batch decided.
// It is written and fsynced before any document of the batch is replaced, so
// that after a crash the batch can be finished from it.
type commitRecord struct {
	Batch  uint64 `json:"batch"`  // 1, 2, 3, ...
	Commit uint64 `json:"commit"` // the last commit number used by this batch

	// Adopt lists the external changes taken in before the entries: edits,
	// deletions, and documents found broken or repaired (docs/format.md, Versions and external edits).
	Adopt []adoption `json:"adopt,omitempty"`
	// Entries are the processed journal lines, in commit order.
	Entries []entry `json:"entries,omitempty"`
	// Docs is the new state of each document this batch changes.
	Docs map[string]docRecord `json:"docs,omitempty"`
	// Journals holds the new read position of each agent that advanced.
	Journals map[string]cursor `json:"journals,omitempty"`
	// Results is where this batch's results start, per agent.
	Results map[string]resultPos `json:"results,omitempty"`
	// Synced is the last batch whose results are known to be fsynced;
	// recovery re-derives the results of the batches after it.
	Synced uint64 `json:"synced"`
	// Retain is the retention window for retries the batch was decided
	// with; replay --verify decides with the same.
	Retain int `json:"retain"`
	// MaxDocSize and MaxDepth are the limits the batch's intents were
	// decided with (0: none, and the parser's depth limit, as before they
	// were recorded); replay --verify decides with the same.
	MaxDocSize int64 `json:"max_doc_size,omitempty"`
	MaxDepth   int   `json:"max_depth,omitempty"`
	// Forget lists the agents forgotten after the entries (forget.go):
	// from this batch on, their names start afresh.
	Forget map[string]forgetRecord `json:"forget,omitempty"`
	// Engine is the version of the rules the batch was decided by
	// (engineVersion; absent: 1, the engine before it was recorded).
	// replay --verify decides again only a batch of this engine; one of
	// another engine is followed as logged (followRecord).
	Engine int `json:"engine,omitempty"`
}

// engineVersion is the version of the rules by which the machine decides:
// what is applied, rejected or a retry, and every error text. It is bumped
// whenever any decision or error text changes, so that a commit log never
// gets re-decided by rules it was not decided with. 1 is the released
// engine whose records carry no "engine" field.
const engineVersion = 2

// entry is one processed journal line.
type entry struct {
	Agent   string          `json:"agent"`
	Segment uint64          `json:"segment"` // journal segment of the line
	Offset  int64           `json:"offset"`  // where the line starts in it
	Intent  json.RawMessage `json:"intent,omitempty"`
	Result  journal.Result  `json:"result"`
}

// adoption is a change to a document made outside stateward and taken in
// as a new version, or a document found broken on disk.
type adoption struct {
	File    string `json:"file"`
	Version uint64 `json:"version"`
	Exists  bool   `json:"exists"`
	Data    []byte `json:"data,omitempty"`   // the bytes on disk (base64), when valid
	Broken  string `json:"broken,omitempty"` // why the file on disk is unusable
}

// docRecord is a document's state after a batch.
type docRecord struct {
	Version uint64 `json:"version"`
	Exists  bool   `json:"exists"`
	SHA256  string `json:"sha256,omitempty"`
	Prev    string `json:"prev,omitempty"` // SHA-256 of the bytes before the batch
}

// cursor is a read position in an agent's journal.
type cursor struct {
	Segment uint64 `json:"segment"`
	Offset  int64  `json:"offset"`
	Seq     uint64 `json:"seq"` // last processed seq
}

// resultPos is a position in an agent's results.
type resultPos struct {
	Segment uint64 `json:"segment"`
	Offset  int64  `json:"offset"`
}

// encodeRecord returns the log line of rec: the CRC-32C of the JSON text in
// eight hex digits, a space, the JSON text, "\n". The entries, which are
// most of it, are written by hand (appendEntry); encoding/json does the rest.
func encodeRecord(rec *commitRecord) ([]byte, error) {
	entries := rec.Entries
	rec.Entries = nil
	rest, err := json.Marshal(rec)
	rec.Entries = entries
	if err != nil {
		return nil, fmt.Errorf("encode commit record %d: %w", rec.Batch, err)
	}
	line := make([]byte, 9, len(rest)+len(entries)*256+16)
	if len(entries) > 0 {
		line = append(line, `{"entries":[`...)
		for i, e := range entries {
			if i > 0 {
				line = append(line, ',')
			}
			line = appendEntry(line, e)
		}
		line = append(line, "],"...)
		line = append(line, rest[1:]...)
	} else {
		line = append(line, rest...)
	}
	copy(line, fmt.Appendf(nil, "%08x ", crc32.Checksum(line[9:], crcTable)))
	return append(line, '\n'), nil
}

// appendEntry appends the JSON of an entry, with the keys of its struct
// tags. The intent is a journal line that parsed as a JSON object, copied
// as it is.
func appendEntry(dst []byte, e entry) []byte {
	// Agent names are [A-Za-z0-9._-] (docs/format.md, Names): nothing to escape.
	dst = append(dst, `{"agent":"`...)
	dst = append(dst, e.Agent...)
	dst = append(dst, '"')
	dst = strconv.AppendUint(append(dst, `,"segment":`...), e.Segment, 10)
	dst = strconv.AppendInt(append(dst, `,"offset":`...), e.Offset, 10)
	if len(e.Intent) > 0 {
		dst = append(append(dst, `,"intent":`...), e.Intent...)
	}
	dst = append(dst, `,"result":`...)
	dst = e.Result.AppendLine(dst)
	dst[len(dst)-1] = '}' // AppendLine's "\n"
	return dst
}

// decodeRecord parses one log line without its "\n".
func decodeRecord(line []byte) (*commitRecord, error) {
	if len(line) < 10 || line[8] != ' ' {
		return nil, errors.New("short or malformed line")
	}
	want, err := strconv.ParseUint(string(line[:8]), 16, 32)
	if err != nil {
		return nil, errors.New("malformed checksum")
	}
	body := line[9:]
	if got := crc32.Checksum(body, crcTable); got != uint32(want) {
		return nil, fmt.Errorf("checksum %08x, want %08x", got, want)
	}
	rec := new(commitRecord)
	if err := json.Unmarshal(body, rec); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return rec, nil
}

// logDir is the commit log's folder under a state directory.
const logDir = ".stateward/commits"

// readLog reads every commit record under dir, in order. It returns the end
// of the last good record in the newest segment, so that a torn tail (a
// record whose write or fsync never finished: nothing was acknowledged from
// it) can be cut. A damaged record followed by good ones is ErrCorruptLog.
func readLog(fs fsys) (recs []*commitRecord, seg uint64, end int64, err error) {
	segs, err := listSegments(fs, logDir)
	if err != nil {
		return nil, 0, 0, err
	}
	for i, s := range segs {
		p := path.Join(logDir, journal.SegmentName(s))
		data, err := readFile(fs, p)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("read commit log %s: %w", p, err)
		}
		off := 0
		for off < len(data) {
			nl := bytes.IndexByte(data[off:], '\n')
			var rec *commitRecord
			var derr error
			if nl < 0 {
				derr = io.ErrUnexpectedEOF
			} else {
				rec, derr = decodeRecord(data[off : off+nl])
			}
			if derr != nil {
				if i == len(segs)-1 && !anyGoodAfter(data, off) {
					return recs, s, int64(off), nil // torn tail
				}
				return nil, 0, 0, fmt.Errorf("%w: %s at offset %d: %v", ErrCorruptLog, p, off, derr)
			}
			if n := len(recs); n > 0 && rec.Batch != recs[n-1].Batch+1 {
				return nil, 0, 0, fmt.Errorf("%w: %s at offset %d: batch %d follows batch %d", ErrCorruptLog, p, off, rec.Batch, recs[n-1].Batch)
			}
			recs = append(recs, rec)
			off += nl + 1
		}
		seg, end = s, int64(off)
	}
	return recs, seg, end, nil
}

// anyGoodAfter reports whether a valid record starts after the damaged line
// at off: if so, the damage is not a torn tail.
func anyGoodAfter(data []byte, off int) bool {
	nl := bytes.IndexByte(data[off:], '\n')
	if nl < 0 {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(data[off+nl+1:]))
	sc.Buffer(nil, len(data))
	for sc.Scan() {
		if _, err := decodeRecord(sc.Bytes()); err == nil {
			return true
		}
	}
	return false
}

// docRecord returns what rec says of document name; rec may be nil.
func (rec *commitRecord) docRecord(name string) (docRecord, bool) {
	if rec == nil {
		return docRecord{}, false
	}
	dr, ok := rec.Docs[name]
	return dr, ok
}
