package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// machine describes where a sweep ran.
type machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	MemTotal  string `json:"mem_total"`
	Kernel    string `json:"kernel"`
	DF        string `json:"df"` // `df -T` of the state directories' filesystem
	Go        string `json:"go"`
	Commit    string `json:"commit"` // stateward's git commit, "+dirty" if the tree has changes
	Hostname  string `json:"hostname"`
	TempFSDir string `json:"tmp"`
}

func describeMachine(base, mod string) machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), TempFSDir: base}
	m.CPUModel = procField("/proc/cpuinfo", "model name")
	m.MemTotal = procField("/proc/meminfo", "MemTotal")
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("df", "-T", base).Output(); err == nil {
		m.DF = strings.TrimSpace(string(out))
	}
	m.Hostname, _ = os.Hostname()
	if mod != "" {
		if out, err := exec.Command("git", "-C", mod, "rev-parse", "--short", "HEAD").Output(); err == nil {
			m.Commit = strings.TrimSpace(string(out))
			// Changes outside bench/ and docs/ change what is measured.
			st, err := exec.Command("git", "-C", mod, "status", "--porcelain", "--", ".", ":!bench", ":!docs").Output()
			if err == nil && len(strings.TrimSpace(string(st))) > 0 {
				m.Commit += "+dirty"
			}
		}
	}
	return m
}

// procField returns the value of the first "key: value" line of a /proc
// file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func (m machine) summary() string {
	fs := ""
	if lines := strings.Split(m.DF, "\n"); len(lines) > 1 {
		if f := strings.Fields(lines[1]); len(f) > 1 {
			fs = f[1]
		}
	}
	return fmt.Sprintf("%d CPUs (%s), %s, %s, stateward %s, %s", m.CPUs, m.CPUModel, m.MemTotal, fs, m.Commit, m.Go)
}
