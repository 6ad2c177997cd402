package main

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestRepository_SelfContained checks that no file of the repository refers
// to a design file that is not in it: docs/format.md and docs/guarantees.md
// are the contract, and every reference points into them. The words are
// spelled with escapes here so that this file does not match itself.
func TestRepository_SelfContained(t *testing.T) {
	root := filepath.Join("..", "..")
	banned := [][]byte{[]byte("\u00a7"), []byte("DESI" + "GN")}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.IndexByte(data, 0) >= 0 {
			return nil // binary (the plots)
		}
		for _, b := range banned {
			if i := bytes.Index(data, b); i >= 0 {
				line := bytes.Count(data[:i], []byte("\n")) + 1
				t.Errorf("%s:%d refers to %q, a section of a file not in the repository; point into docs/format.md or docs/guarantees.md", path, line, b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
