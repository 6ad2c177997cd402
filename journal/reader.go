package journal

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// ErrLineTooLong is returned by Reader.Next for a complete line longer than
// the reader's MaxLine. The reader has skipped past it.
var ErrLineTooLong = errors.New("journal: line too long")

// Record is one complete line of a segment.
type Record struct {
	Offset int64  // where the line starts in its segment
	Line   []byte // the line with its "\n"; valid until the next call to Next
}

// End returns the offset just past the record.
func (r Record) End() int64 { return r.Offset + int64(len(r.Line)) }

// Reader reads complete lines from a segment. A final line without its "\n"
// is not yet written (docs/format.md, Intent): Next returns io.ErrUnexpectedEOF for it, without
// consuming it, so that a later Reader can start at Offset and find it whole.
type Reader struct {
	MaxLine int // longest accepted line, "\n" included; NewReader sets DefaultMaxLine

	br   *bufio.Reader
	off  int64  // offset of the next unread byte; owned by the caller's goroutine
	long []byte // scratch for lines longer than the bufio buffer
}

// NewReader returns a Reader of r, whose first byte is at offset off of its
// segment.
func NewReader(r io.Reader, off int64) *Reader {
	return &Reader{MaxLine: DefaultMaxLine, br: bufio.NewReaderSize(r, 8<<10), off: off}
}

// Offset returns the offset just past the last complete line returned or
// skipped: where reading resumes.
func (r *Reader) Offset() int64 { return r.off }

// Next returns the next complete line. At the end of the data it returns
// io.EOF if the data ended on a line boundary, and io.ErrUnexpectedEOF if a
// line has begun without its "\n". A complete line longer than MaxLine is
// skipped and reported as an error wrapping ErrLineTooLong, with the record's
// Offset set and Line nil.
func (r *Reader) Next() (Record, error) {
	start := r.off
	r.long = r.long[:0]
	size := 0
	for {
		frag, err := r.br.ReadSlice('\n')
		size += len(frag)
		if size <= r.MaxLine {
			if err == nil && len(r.long) == 0 {
				r.off += int64(size)
				return Record{Offset: start, Line: frag}, nil
			}
			r.long = append(r.long, frag...)
		} else {
			r.long = r.long[:0] // too long: stop keeping it, keep counting
		}
		switch {
		case err == nil:
			r.off += int64(size)
			if size > r.MaxLine {
				return Record{Offset: start}, fmt.Errorf("%w: %d bytes at offset %d, limit %d", ErrLineTooLong, size, start, r.MaxLine)
			}
			return Record{Offset: start, Line: r.long}, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if size == 0 {
				return Record{}, io.EOF
			}
			return Record{}, io.ErrUnexpectedEOF
		default:
			return Record{}, err
		}
	}
}

// LastSeq scans a whole segment and returns the offset just past its last
// complete line and the highest readable seq in it (0 if none).
func LastSeq(r io.Reader) (end int64, seq uint64, err error) {
	rd := NewReader(r, 0)
	rd.MaxLine = 1<<63 - 1 // only the seq matters here
	for {
		rec, err := rd.Next()
		switch {
		case err == nil:
			if s, ok := peekSeq(rec.Line); ok && s > seq {
				seq = s
			}
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return rd.Offset(), seq, nil
		default:
			return rd.Offset(), seq, err
		}
	}
}

// peekSeq reads the seq of a line as the watcher does, whether or not the
// rest of the line is valid. (No shortcut on the bytes `"seq"`: a key may be
// written with escapes, as "se\u0071".)
func peekSeq(line []byte) (uint64, bool) {
	_, s, _ := ParseIntent(line)
	return s, s > 0
}
