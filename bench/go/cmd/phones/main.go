// Command phones is the Go phone generator of bench.load: N participants on server-sdk-go, one room
// each, every one sending a lossy data packet every 100 ms in the format of bench/load/traffic.py,
// spread over the period as bench/load/workers.py Phones spreads them. Commands on stdin:
//
//	connect {url, phones: [{index, room_name, identity, token, listen}]}, report {t0, t1}, quit
//
// It sends only: the phones that listen to talkback (Opus decoding) stay Python (bench.load starts
// them as a separate listeners process), so "onsets" in its report stays empty. A phone whose spec
// names receivers ("to": identities) sends to those only, so the listeners in its room do not get
// (and pay for) every packet.
package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	lksdk "github.com/livekit/server-sdk-go/v2"

	"github.com/mentra/livekit-bridge/bench/go/internal/wire"
)

const connectParallelism = 4 // as bench/load/workers.py

type phone struct {
	Index    int      `json:"index"`
	RoomName string   `json:"room_name"`
	Identity string   `json:"identity"`
	Token    string   `json:"token"`
	To       []string `json:"to"`

	room   *lksdk.Room
	mu     sync.Mutex
	sentNs []int64
	lagMs  []float64
	errors int
}

// send runs until stop closes: one packet per period from start (plus this phone's phase).
func (p *phone) send(start time.Time, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(uint64(p.Index), 0))
	packet := make([]byte, wire.PacketBytes)
	for i := 1 + wire.HeaderBytes; i+1 < len(packet); i += 2 {
		sample := int16(rng.IntN(6000) - 3000) // the Python phones' fixed noise range
		packet[i], packet[i+1] = byte(sample), byte(sample>>8)
	}
	local := p.room.LocalParticipant
	options := []lksdk.DataPublishOption{lksdk.WithDataPublishReliable(false)}
	if len(p.To) > 0 {
		options = append(options, lksdk.WithDataPublishDestination(p.To))
	}
	timer := time.NewTimer(time.Until(start))
	defer timer.Stop()
	for counter := uint32(0); ; counter++ {
		target := start.Add(time.Duration(counter) * wire.Period)
		timer.Reset(time.Until(target))
		select {
		case <-stop:
			return
		case <-timer.C:
		}
		lag := time.Since(target)
		now := time.Now().UnixNano()
		packet[0] = byte(counter)
		wire.PutHeader(packet[1:], now, uint32(p.Index), counter)
		// The SDK marshals the payload before returning, so the buffer can be reused.
		err := local.PublishDataPacket(lksdk.UserData(packet), options...)
		p.mu.Lock()
		if err != nil {
			p.errors++
		}
		p.sentNs = append(p.sentNs, now)
		p.lagMs = append(p.lagMs, float64(lag)/float64(time.Millisecond))
		p.mu.Unlock()
	}
}

type generator struct {
	phones  []*phone
	stop    chan struct{}
	senders sync.WaitGroup
	started atomic.Bool
}

func (g *generator) connect(raw json.RawMessage) (wire.Reply, error) {
	if g.started.Swap(true) {
		return nil, fmt.Errorf("already connected")
	}
	var command struct {
		URL    string   `json:"url"`
		Phones []*phone `json:"phones"`
	}
	if err := json.Unmarshal(raw, &command); err != nil {
		return nil, err
	}
	g.phones = command.Phones
	began := time.Now()
	err := wire.Connect(len(g.phones), connectParallelism, func(i int) error {
		p := g.phones[i]
		room, err := lksdk.ConnectToRoomWithToken(command.URL, p.Token, lksdk.NewRoomCallback(),
			lksdk.WithAutoSubscribe(false), lksdk.WithConnectTimeout(20*time.Second))
		if err != nil {
			return fmt.Errorf("phone %d: %w", p.Index, err)
		}
		p.room = room
		return nil
	})
	if err != nil {
		return nil, err
	}
	base := time.Now().Add(200 * time.Millisecond)
	for _, p := range g.phones {
		// Real phones are not synchronised: spread the sends over the period.
		phase := wire.Period * time.Duration(p.Index) / time.Duration(max(1, len(g.phones)))
		g.senders.Add(1)
		go func() {
			defer g.senders.Done()
			p.send(base.Add(phase), g.stop)
		}()
	}
	return wire.Reply{"connected": len(g.phones), "connect_s": time.Since(began).Seconds()}, nil
}

func (g *generator) report(raw json.RawMessage) (wire.Reply, error) {
	var window wire.Window
	if err := json.Unmarshal(raw, &window); err != nil {
		return nil, err
	}
	sent := map[string]int{}
	lags := []float64{}
	errors := 0
	for _, p := range g.phones {
		p.mu.Lock()
		first, last := wire.Between(p.sentNs, window.T0, window.T1)
		sent[fmt.Sprint(p.Index)] = last - first
		lags = append(lags, p.lagMs[first:last]...)
		errors += p.errors
		p.mu.Unlock()
	}
	return wire.Reply{"sent": sent, "lag_ms": lags, "errors": errors, "onsets": [][]any{}}, nil
}

func (g *generator) quit(json.RawMessage) (wire.Reply, error) {
	close(g.stop)
	g.senders.Wait()
	for _, p := range g.phones {
		if p.room != nil {
			p.room.Disconnect()
		}
	}
	return wire.Reply{"ok": true}, nil
}

func main() {
	g := &generator{stop: make(chan struct{})}
	wire.Run(map[string]wire.Handler{"connect": g.connect, "report": g.report, "quit": g.quit})
}
