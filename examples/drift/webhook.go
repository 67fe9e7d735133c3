package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/novacron/sidecar/features/drift"
)

// received is one alert the receiver took, with when.
type received struct {
	at    time.Time
	alert drift.Alert
}

// receiver is the webhook the sidecar alerts: it records every alert POSTed to /alerts (a
// drift.Alert as JSON) and answers 204. Its methods may be called concurrently.
type receiver struct {
	url  string
	srv  *http.Server
	done chan struct{} // closed when Serve has returned

	// mu guards got and bad.
	mu  sync.Mutex
	got []received
	bad []string // requests that were not an alert
	// added gets a value (without blocking) after each alert.
	added chan struct{}
}

// listenWebhook starts the receiver on a free loopback port.
func listenWebhook() (*receiver, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &receiver{url: "http://" + l.Addr().String() + "/alerts", done: make(chan struct{}), added: make(chan struct{}, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /alerts", r.handle)
	r.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { // owned by the receiver: close stops it and waits
		defer close(r.done)
		r.srv.Serve(l)
	}()
	return r, nil
}

func (r *receiver) handle(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 4<<20))
	var al drift.Alert
	if err == nil {
		err = json.Unmarshal(body, &al)
	}
	r.mu.Lock()
	if err != nil {
		r.bad = append(r.bad, err.Error())
	} else {
		r.got = append(r.got, received{time.Now(), al})
	}
	r.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	select {
	case r.added <- struct{}{}:
	default:
	}
	w.WriteHeader(http.StatusNoContent)
}

// alerts returns the alerts so far, and the requests that were not alerts.
func (r *receiver) alerts() ([]received, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...), append([]string(nil), r.bad...)
}

// close stops the receiver and waits for it.
func (r *receiver) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := r.srv.Shutdown(ctx); err != nil {
		r.srv.Close()
	}
	<-r.done
}

// describe is an alert in one line: its kind, model, node, window and drifted features.
func describe(al drift.Alert) string {
	w := al.Window
	s := fmt.Sprintf("%s alert of model %s from node %q: window %s +%v, %d rows", al.Kind, al.Model, al.Node,
		w.Start.UTC().Format(time.TimeOnly), w.End.Sub(w.Start), w.Rows)
	if al.Kind != drift.AlertDrift {
		return s
	}
	s += fmt.Sprintf(", %d of %d features drifted (share %.0f%%)", w.Drifted, len(w.Features), 100*w.Share)
	for _, f := range w.Features {
		if f.Drifted {
			s += fmt.Sprintf("; %s %s %.3f > %g", f.Name, f.Method, f.Score, f.Threshold)
		}
	}
	return s
}
