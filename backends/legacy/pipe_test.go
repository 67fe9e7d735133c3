package legacy

import (
	"context"
	"net"
	"net/http"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// pipeListener is a net.Listener of in-memory connections (net.Pipe), so that a test can run a
// real HTTP or gRPC server and the client under test in a testing/synctest bubble. A wait on a
// pipe is durably blocking, so the bubble's fake clock moves on while a call waits for its answer,
// and every timer (the caller's deadline, the client's Timeout, the server's delay) fires exactly
// when due, whatever the machine's speed. A wait on a loopback socket is not durably blocking: the
// bubble's clock would stand still while the server ran on the real one.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

// dial connects to the listener: the server's end of a new pipe goes to Accept.
func (l *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
	case <-ctx.Done():
	}
	client.Close()
	server.Close()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return nil, net.ErrClosed
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// pipeHTTP serves h with net/http over pipes and returns an HTTP client of it made by NewHTTP from
// cfg (BaseURL is set here), dialing the pipes. Call it inside a synctest bubble; the cleanup
// closes both ends.
func pipeHTTP(t *testing.T, h http.Handler, cfg HTTPConfig) *HTTP {
	t.Helper()
	l := newPipeListener()
	srv := &http.Server{Handler: h}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(l)
	}()
	cfg.BaseURL = "http://legacy.test"
	c, err := NewHTTP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.client.Transport.(*http.Transport).DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		return l.dial(ctx)
	}
	t.Cleanup(func() {
		c.Close()
		srv.Close()
		<-served
	})
	return c
}

// pipeGRPC serves svc with grpc-go over pipes and returns a GRPC client of it made by NewGRPC from
// cfg (Address is set here), its connection replaced by one that dials the pipes. Call it inside a
// synctest bubble; the cleanup closes both ends.
func pipeGRPC(t *testing.T, svc aipb.AIServiceServer, cfg GRPCConfig) *GRPC {
	t.Helper()
	l := newPipeListener()
	srv := grpc.NewServer()
	aipb.RegisterAIServiceServer(srv, svc)
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(l)
	}()
	cfg.Address = "passthrough:///pipe"
	c, err := NewGRPC(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.conn.Close() // never used: it has no way to the pipes
	conn, err := grpc.NewClient(cfg.Address, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return l.dial(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	c.conn, c.ai, c.health = conn, aipb.NewAIServiceClient(conn), healthpb.NewHealthClient(conn)
	t.Cleanup(func() {
		c.Close()
		srv.Stop()
		<-served
	})
	return c
}
