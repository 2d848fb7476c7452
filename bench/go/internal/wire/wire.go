// Package wire is what the Go workers share with bench.load: the JSON-lines command protocol on
// stdin/stdout (bench/load/workers.py's) and the packet header (bench/load/traffic.py's).
package wire

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/stdr"
	lksdk "github.com/livekit/server-sdk-go/v2"

	protoLogger "github.com/livekit/protocol/logger"
)

// Packet layout, as bench/load/traffic.py: one sequence byte, then 3200 bytes of PCM whose first 16
// bytes are the header "<QII": send time (ns since the epoch, CLOCK_REALTIME), phone index, counter.
const (
	HeaderBytes = 16
	PCMBytes    = 3200
	PacketBytes = 1 + PCMBytes
	Period      = 100 * time.Millisecond
)

// PutHeader writes the header into pcm (the packet without its sequence byte).
func PutHeader(pcm []byte, sentNs int64, phone, counter uint32) {
	binary.LittleEndian.PutUint64(pcm[0:8], uint64(sentNs))
	binary.LittleEndian.PutUint32(pcm[8:12], phone)
	binary.LittleEndian.PutUint32(pcm[12:16], counter)
}

// ReadHeader reads the header of a whole packet (sequence byte included), as the floor does at offset 1.
func ReadHeader(packet []byte) (sentNs int64, phone, counter uint32, ok bool) {
	if len(packet) < 1+HeaderBytes {
		return 0, 0, 0, false
	}
	pcm := packet[1:]
	return int64(binary.LittleEndian.Uint64(pcm[0:8])), binary.LittleEndian.Uint32(pcm[8:12]),
		binary.LittleEndian.Uint32(pcm[12:16]), true
}

// Reply is one answer line.
type Reply map[string]any

// Handler answers one command (the whole decoded line).
type Handler func(command json.RawMessage) (Reply, error)

// MaxCommands bounds the command loop: a sweep point sends fewer than ten.
const MaxCommands = 10000

// Serve reads one JSON command per line from stdin and writes exactly one "@@ "-prefixed answer line
// per command to stdout, as bench.load's workers do. It returns after "quit", or when stdin closes
// (bench.load died): the process must not outlive it.
func Serve(handlers map[string]Handler) {
	reader := bufio.NewReaderSize(os.Stdin, 1<<20)
	out := bufio.NewWriter(os.Stdout)
	for range MaxCommands {
		line, err := reader.ReadBytes('\n')
		if err != nil {
			if err != io.EOF {
				log.Printf("stdin: %v", err)
			}
			return
		}
		var head struct {
			Cmd string `json:"cmd"`
		}
		reply := Reply{}
		if err := json.Unmarshal(line, &head); err != nil {
			reply = Reply{"error": fmt.Sprintf("bad command: %v", err)}
		} else if handler, found := handlers[head.Cmd]; !found {
			reply = Reply{"error": fmt.Sprintf("unknown command %q", head.Cmd)}
		} else if answer, err := handler(line); err != nil {
			reply = Reply{"error": fmt.Sprintf("%s: %v", head.Cmd, err)}
		} else {
			reply = answer
		}
		encoded, err := json.Marshal(reply)
		if err != nil {
			encoded = []byte(fmt.Sprintf(`{"error": %q}`, err.Error()))
		}
		out.WriteString("@@ ")
		out.Write(encoded)
		out.WriteString("\n")
		out.Flush()
		if head.Cmd == "quit" {
			return
		}
	}
}

// MaxLifetime bounds a worker's run: every loop of it ends by then whatever happens.
const MaxLifetime = 2 * time.Hour

// Run is a worker's whole main: the SDK's logs to stderr (stdout carries the answers), the lifetime
// bound, then Serve.
func Run(handlers map[string]Handler) {
	log.SetOutput(os.Stderr)
	lksdk.SetLogger(protoLogger.LogRLogger(stdr.New(log.Default())))
	lifetime(MaxLifetime)
	Serve(handlers)
}

// lifetime ends the process after limit whatever happens.
func lifetime(limit time.Duration) {
	time.AfterFunc(limit, func() {
		log.Printf("lifetime of %s reached: exiting", limit)
		os.Exit(3)
	})
}

// Connect runs connect(i) for i in [0, n) with at most parallel at once; the first error wins.
func Connect(n, parallel int, connect func(i int) error) error {
	gate := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for i := range n {
		wg.Add(1)
		gate <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-gate }()
			if err := connect(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// Window bounds in ns (the driver's t0/t1, time.time_ns() values).
type Window struct {
	T0 int64 `json:"t0"`
	T1 int64 `json:"t1"`
}

// Between returns the part of sorted values inside [lo, hi].
func Between(sorted []int64, lo, hi int64) (first, last int) {
	first = sort.Search(len(sorted), func(i int) bool { return sorted[i] >= lo })
	last = sort.Search(len(sorted), func(i int) bool { return sorted[i] > hi })
	return first, last
}
