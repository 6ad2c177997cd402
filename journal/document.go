package journal

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// VersionsPath is the versions file under a state directory, which the
// watcher rewrites (by atomic rename) after each batch's documents are on
// disk and before their results appear. Readers pair a document's bytes
// with its version through the hash it records.
const VersionsPath = ".stateward/versions.json"

// ErrUnversioned is returned by ReadDocument when the document on disk
// matches no version the watcher has committed: it was changed outside
// stateward and the watcher has not adopted the change yet (or is stopped).
var ErrUnversioned = errors.New("journal: document on disk matches no committed version")

// Versions is the content of the versions file.
type Versions struct {
	Commit uint64                `json:"commit"` // last commit whose documents are on disk
	Docs   map[string]DocVersion `json:"docs"`
}

// DocVersion is a document's version and the SHA-256 of its bytes on disk.
// A document that does not exist (never created, or deleted outside
// stateward) has Exists false.
type DocVersion struct {
	Version uint64 `json:"version"`
	Exists  bool   `json:"exists"`
	SHA256  string `json:"sha256,omitempty"`
	Broken  string `json:"broken,omitempty"` // why the file on disk is unusable, if it is
}

// Hash returns the hex SHA-256 of data, as DocVersion.SHA256 records it.
func Hash(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// ReadVersions reads the versions file of dir. A missing file reads as no
// documents.
func ReadVersions(dir string) (Versions, error) {
	data, err := os.ReadFile(filepath.Join(dir, VersionsPath))
	if errors.Is(err, os.ErrNotExist) {
		return Versions{Docs: map[string]DocVersion{}}, nil
	}
	if err != nil {
		return Versions{}, fmt.Errorf("read versions: %w", err)
	}
	var v Versions
	if err := json.Unmarshal(data, &v); err != nil {
		return Versions{}, fmt.Errorf("parse versions %s: %w", VersionsPath, err)
	}
	if v.Docs == nil {
		v.Docs = map[string]DocVersion{}
	}
	return v, nil
}

// Document is a document's data with the version it has (what `stateward read` prints).
type Document struct {
	File    string          `json:"file"`
	Version uint64          `json:"version"`
	Data    json.RawMessage `json:"data"` // "null" when the document does not exist
}

// ReadDocument reads document name of state directory dir together with its
// version. The pair is consistent: the data is exactly what the watcher
// wrote as that version. While a commit is replacing the file it retries, for
// at most the time ctx allows; a file that matches no committed version gives
// ErrUnversioned.
func ReadDocument(ctx context.Context, dir, name string) (Document, error) {
	if err := CheckDocName(name); err != nil {
		return Document{}, err
	}
	delay := time.Millisecond
	for {
		doc, err := readDocumentOnce(dir, name)
		if !errors.Is(err, ErrUnversioned) {
			return doc, err
		}
		select {
		case <-ctx.Done():
			return Document{}, fmt.Errorf("read %s: %w", name, err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

func readDocumentOnce(dir, name string) (Document, error) {
	before, err := ReadVersions(dir)
	if err != nil {
		return Document{}, err
	}
	data, err := os.ReadFile(filepath.Join(dir, name))
	exists := err == nil
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return Document{}, fmt.Errorf("read %s: %w", name, err)
	}
	after, err := ReadVersions(dir)
	if err != nil {
		return Document{}, err
	}
	hash := ""
	if exists {
		hash = Hash(data)
	}
	for _, v := range []Versions{after, before} {
		dv, known := v.Docs[name]
		switch {
		case !exists && !dv.Exists:
			return Document{File: name, Version: dv.Version, Data: json.RawMessage("null")}, nil
		case exists && known && dv.Exists && dv.SHA256 == hash:
			var buf bytes.Buffer
			// A byte order mark (some editors write one; RFC 8259 lets a
			// parser ignore it) is not part of the JSON text.
			if err := json.Compact(&buf, bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))); err != nil {
				return Document{}, fmt.Errorf("read %s: %w", name, err)
			}
			return Document{File: name, Version: dv.Version, Data: buf.Bytes()}, nil
		}
	}
	return Document{}, fmt.Errorf("%w: %s", ErrUnversioned, name)
}
