// Package natsembed runs the NATS server every Meshflow node embeds by
// default: JetStream on, its store in a data directory, its logs routed to
// the node's slog logger, and an 8 MiB max payload so Arrow batches fit.
package natsembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/meshflow/meshflow/internal/logging"
)

// DefaultMaxPayload is the max message size of the embedded server.
const DefaultMaxPayload = 8 << 20

// User is a NATS user of the embedded server with the subjects it may
// publish and subscribe to. A subject matching a Deny pattern is refused
// even when an allow pattern matches it.
type User struct {
	Name, Password             string
	Publish, Subscribe         []string
	DenyPublish, DenySubscribe []string
	// AllowResponses lets the user answer the requests it receives: publish
	// one message to a request's reply subject, within two minutes, whether
	// or not Publish allows it.
	AllowResponses bool
}

// Config configures the embedded server.
type Config struct {
	// Name of the server. Default "meshflow".
	Name string
	// StoreDir holds the JetStream data. Required.
	StoreDir string
	// Host and Port clients connect to; Port -1 picks a free port, 0 is
	// the NATS default 4222. Ignored with DontListen.
	Host string
	Port int
	// DontListen: no TCP listener, in-process connections only.
	DontListen bool
	// MaxPayload in bytes. Default DefaultMaxPayload.
	MaxPayload int32
	// JetStream limits; 0 lets the server size them.
	JetStreamMaxMemory, JetStreamMaxStore int64
	// SyncAlways fsyncs every JetStream write.
	SyncAlways bool
	// Users, when set, require authentication and limit each user to its
	// subjects.
	Users []User
	// NoAuthUser is the user (one of Users) a client connecting without
	// credentials acts as; empty: such clients are refused.
	NoAuthUser string
	// Logger receives the server's logs. Default: discard.
	Logger *slog.Logger
}

// Server is a running embedded NATS server.
type Server struct {
	ns  *server.Server
	cfg Config
}

// Start starts the server and waits until it accepts connections (bounded
// by ctx, and by 30 s when ctx has no deadline). It returns at once when
// ctx is cancelled or the server fails to start, for example because its
// port is taken.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("natsembed: %w", err)
	}
	if cfg.StoreDir == "" {
		return nil, errors.New("natsembed: StoreDir is required")
	}
	if cfg.Name == "" {
		cfg.Name = "meshflow"
	}
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Logger == nil {
		cfg.Logger = logging.Discard()
	}
	opts := &server.Options{
		ServerName:             cfg.Name,
		Host:                   cfg.Host,
		Port:                   cfg.Port,
		DontListen:             cfg.DontListen,
		JetStream:              true,
		StoreDir:               cfg.StoreDir,
		JetStreamMaxMemory:     cfg.JetStreamMaxMemory,
		JetStreamMaxStore:      cfg.JetStreamMaxStore,
		MaxPayload:             cfg.MaxPayload,
		SyncAlways:             cfg.SyncAlways,
		NoSigs:                 true,
		DisableJetStreamBanner: true,
	}
	for _, u := range cfg.Users {
		perms := &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: u.Publish, Deny: u.DenyPublish},
			Subscribe: &server.SubjectPermission{Allow: u.Subscribe, Deny: u.DenySubscribe},
		}
		if u.AllowResponses {
			perms.Response = &server.ResponsePermission{MaxMsgs: 1, Expires: 2 * time.Minute}
		}
		opts.Users = append(opts.Users, &server.User{Username: u.Name, Password: u.Password, Permissions: perms})
	}
	opts.NoAuthUser = cfg.NoAuthUser
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsembed: %w", err)
	}
	// A fatal error (a busy port, a JetStream store that cannot start)
	// leaves the server never ready: catch it to fail at once.
	fatal := &fatalLogger{Logger: logging.NATSServerLogger(cfg.Logger), ch: make(chan string, 1)}
	ns.SetLoggerV2(fatal, false, false, false)
	go ns.Start()
	err = waitReady(ctx, ns, fatal.ch)
	fatal.started.Store(true)
	if err != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("natsembed: server %s: %w", cfg.Name, err)
	}
	return &Server{ns: ns, cfg: cfg}, nil
}

// startTimeout bounds the wait for a server to accept connections when
// ctx has no deadline.
const startTimeout = 30 * time.Second

// waitReady waits until ns accepts connections, the server reports a fatal
// error, or ctx is done.
func waitReady(ctx context.Context, ns *server.Server, fatal <-chan string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		// A short look; the wait is the ticker's, which watches ctx.
		if ns.ReadyForConnections(time.Millisecond) {
			return nil
		}
		select {
		case msg := <-fatal:
			return errors.New(msg)
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("not ready for connections: %w", ctx.Err())
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// fatalLogger passes the server's logs on. Until the server has started,
// it reports its first fatal error on ch instead (Start returns it).
type fatalLogger struct {
	server.Logger
	ch      chan string
	started atomic.Bool
}

func (l *fatalLogger) Fatalf(format string, v ...any) {
	if !l.started.Load() {
		select {
		case l.ch <- fmt.Sprintf(format, v...):
			return
		default:
		}
	}
	l.Logger.Fatalf(format, v...)
}

// Connect opens an in-process connection (no TCP), which works whether or
// not the server listens.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect("", append([]nats.Option{nats.InProcessServer(s.ns)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("natsembed: connect: %w", err)
	}
	return nc, nil
}

// ClientURL is the URL clients in other processes connect to, or "" when
// the server does not listen.
func (s *Server) ClientURL() string {
	if s.cfg.DontListen {
		return ""
	}
	return s.ns.ClientURL()
}

// NATSServer is the underlying server.
func (s *Server) NATSServer() *server.Server { return s.ns }

// Shutdown stops the server and waits for it, bounded by ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("natsembed: shutdown: %w", ctx.Err())
	}
}
