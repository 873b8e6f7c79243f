package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
)

// defaultNATSURL is the server used when neither --server nor NATS_URL is
// set.
const defaultNATSURL = "nats://127.0.0.1:4222"

// natsFlags are the connection flags, spelled as the nats CLI spells them.
type natsFlags struct {
	env         *Env
	server      string
	creds       string
	user        string
	password    string
	inboxPrefix string
	timeout     time.Duration
}

// addNATSFlags registers the connection flags on cmd.
func addNATSFlags(cmd *cobra.Command, env *Env) *natsFlags {
	server := env.getenv("NATS_URL")
	if server == "" {
		server = defaultNATSURL
	}
	return addNATSFlagsFor(cmd, env, server, "NATS server URLs, comma separated; $NATS_URL sets the default")
}

// addNATSFlagsFor registers the connection flags on cmd, with server as
// the default of --server and usage as its help.
func addNATSFlagsFor(cmd *cobra.Command, env *Env, server, usage string) *natsFlags {
	f := &natsFlags{env: env}
	fs := cmd.Flags()
	fs.StringVarP(&f.server, "server", "s", server, usage)
	fs.StringVar(&f.creds, "creds", "", "user credentials file")
	fs.StringVar(&f.user, "user", "", "username or token")
	fs.StringVar(&f.password, "password", "", "password")
	fs.StringVar(&f.inboxPrefix, "inbox-prefix", "", "custom inbox prefix for replies (meshflow dev's producers: _INBOX_producer)")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Second, "time to wait for the server: connecting, API requests, acknowledgements")
	return f
}

// connect opens a connection to the server selected by f. Cancelling ctx
// aborts a connection attempt in progress.
func connect(ctx context.Context, f *natsFlags) (*nats.Conn, error) {
	if f.timeout <= 0 {
		return nil, usageErrorf("invalid --timeout %v: must be positive", f.timeout)
	}
	log := f.env.Logger
	dialer := &ctxDialer{ctx: ctx, d: net.Dialer{Timeout: f.timeout}}
	opts := []nats.Option{
		nats.Name("meshflow"),
		nats.Timeout(f.timeout),
		nats.SetCustomDialer(dialer),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			if inboxDenied(nc, err) {
				// No reply can ever arrive: fail now rather than at the
				// timeout of every request.
				log.Error("the server denies this user the inbox prefix "+inboxPrefix(f)+
					": set --inbox-prefix to the user's own (meshflow dev's producers: --inbox-prefix _INBOX_producer)", "err", err)
				nc.Close()
				return
			}
			if sub != nil {
				log.Warn("nats error", "subject", sub.Subject, "err", err)
				return
			}
			log.Warn("nats error", "err", err)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from nats", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to nats", "server", nc.ConnectedUrlRedacted())
		}),
	}
	if f.inboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(f.inboxPrefix))
	}
	if f.creds != "" {
		opts = append(opts, nats.UserCredentials(f.creds))
	}
	switch {
	case f.user != "" && f.password != "":
		opts = append(opts, nats.UserInfo(f.user, f.password))
	case f.user != "":
		opts = append(opts, nats.Token(f.user))
	case f.password != "":
		return nil, usageErrorf("--password needs --user")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	nc, err := nats.Connect(f.server, opts...)
	dialer.connected()
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("connect to %s: %w", f.server, ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", f.server, err)
	}
	log.Debug("connected to nats", "server", nc.ConnectedUrlRedacted())
	return nc, nil
}

// inboxPrefix is the inbox prefix connections made with f use.
func inboxPrefix(f *natsFlags) string {
	if f.inboxPrefix != "" {
		return f.inboxPrefix
	}
	return strings.TrimSuffix(nats.InboxPrefix, ".")
}

// inboxDenied reports whether err is the server refusing nc a subscription
// to its own inboxes.
func inboxDenied(nc *nats.Conn, err error) bool {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return false
	}
	prefix := strings.TrimSuffix(nats.InboxPrefix, ".")
	if nc.Opts.InboxPrefix != "" {
		prefix = nc.Opts.InboxPrefix
	}
	return strings.Contains(err.Error(), `Subscription to "`+prefix+".")
}

// ctxDialer dials with a context, so that cancelling the command aborts a
// connection attempt: the dial itself, and until connected() the
// handshake on the connections it made (a server that accepts but never
// answers).
type ctxDialer struct {
	ctx context.Context
	d   net.Dialer

	mu    sync.Mutex
	done  bool
	stops []func() bool
}

func (c *ctxDialer) Dial(network, address string) (net.Conn, error) {
	conn, err := c.d.DialContext(c.ctx, network, address)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.done {
		c.stops = append(c.stops, context.AfterFunc(c.ctx, func() { conn.Close() }))
	}
	return conn, nil
}

// connected ends the watch on the handshake: from now on cancelling ctx
// leaves the connection to its owner, who drains and closes it.
func (c *ctxDialer) connected() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = true
	for _, stop := range c.stops {
		stop()
	}
	c.stops = nil
}
