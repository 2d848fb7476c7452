// Command receiver is the Go floor of bench.load: N rooms joined with server-sdk-go (the pion stack an
// alternative bridge would use) and a data handler that only reads the send time in each packet,
// exactly as the Python floor (bench/load/workers.py Floor) does. Commands on stdin, as that floor's:
//
//	hello, connect {url, rooms: [{index, room_name, identity, token, talkback}]}, report {t0, t1}, quit
//
// It does not publish talkback audio (that would need an Opus encoder): its tones list stays empty.
package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"time"

	lksdk "github.com/livekit/server-sdk-go/v2"

	"github.com/mentra/livekit-bridge/bench/go/internal/wire"
)

type record struct {
	sentNs, atNs int64
	counter      uint32
}

type floorRoom struct {
	Index    int    `json:"index"`
	RoomName string `json:"room_name"`
	Identity string `json:"identity"`
	Token    string `json:"token"`
	Talkback bool   `json:"talkback"`

	room    *lksdk.Room
	mu      sync.Mutex
	records []record
}

func (f *floorRoom) onData(packet lksdk.DataPacket, _ lksdk.DataReceiveParams) {
	now := time.Now().UnixNano() // CLOCK_REALTIME, as time.time_ns() in the phones
	user, ok := packet.(*lksdk.UserDataPacket)
	if !ok {
		return
	}
	sentNs, _, counter, ok := wire.ReadHeader(user.Payload)
	if !ok {
		return
	}
	f.mu.Lock()
	f.records = append(f.records, record{sentNs, now, counter})
	f.mu.Unlock()
}

type receiver struct {
	rooms []*floorRoom
}

func (r *receiver) hello(json.RawMessage) (wire.Reply, error) {
	return wire.Reply{"goroutines": runtime.NumGoroutine()}, nil
}

func (r *receiver) connect(raw json.RawMessage) (wire.Reply, error) {
	var command struct {
		URL   string       `json:"url"`
		Rooms []*floorRoom `json:"rooms"`
	}
	if err := json.Unmarshal(raw, &command); err != nil {
		return nil, err
	}
	started := time.Now()
	// One room at a time, as the bridge and the Python floor connect them.
	for _, entry := range command.Rooms {
		callback := lksdk.NewRoomCallback()
		callback.OnDataPacket = entry.onData
		room, err := lksdk.ConnectToRoomWithToken(command.URL, entry.Token, callback,
			lksdk.WithAutoSubscribe(true), lksdk.WithConnectTimeout(20*time.Second))
		if err != nil {
			return nil, fmt.Errorf("room %s: %w", entry.RoomName, err)
		}
		entry.room = room
		r.rooms = append(r.rooms, entry)
	}
	return wire.Reply{"connected": len(r.rooms), "connect_s": time.Since(started).Seconds()}, nil
}

func (r *receiver) report(raw json.RawMessage) (wire.Reply, error) {
	var window wire.Window
	if err := json.Unmarshal(raw, &window); err != nil {
		return nil, err
	}
	latencies := []float64{}
	received := map[string]int{}
	for _, entry := range r.rooms {
		counters := map[uint32]struct{}{}
		entry.mu.Lock()
		for _, rec := range entry.records {
			if window.T0 <= rec.sentNs && rec.sentNs <= window.T1 {
				latencies = append(latencies, float64(rec.atNs-rec.sentNs)/1e6)
				counters[rec.counter] = struct{}{}
			}
		}
		entry.mu.Unlock()
		received[fmt.Sprint(entry.Index)] = len(counters)
	}
	return wire.Reply{
		"latency_ms": latencies,
		"received":   received,
		"tones":      [][]int64{},
		"goroutines": runtime.NumGoroutine(),
	}, nil
}

func (r *receiver) quit(json.RawMessage) (wire.Reply, error) {
	for _, entry := range r.rooms {
		entry.room.Disconnect()
	}
	return wire.Reply{"ok": true}, nil
}

func main() {
	r := &receiver{}
	wire.Run(map[string]wire.Handler{
		"hello": r.hello, "connect": r.connect, "report": r.report, "quit": r.quit,
	})
}
