package cli

import (
	"context"
	"fmt"
	"net"
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
	opts := []nats.Option{
		nats.Name("meshflow"),
		nats.Timeout(f.timeout),
		nats.SetCustomDialer(ctxDialer{ctx: ctx, d: net.Dialer{Timeout: f.timeout}}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
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
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", f.server, err)
	}
	log.Debug("connected to nats", "server", nc.ConnectedUrlRedacted())
	return nc, nil
}

// ctxDialer dials with a context, so that cancelling the command aborts a
// connection attempt.
type ctxDialer struct {
	ctx context.Context
	d   net.Dialer
}

func (c ctxDialer) Dial(network, address string) (net.Conn, error) {
	return c.d.DialContext(c.ctx, network, address)
}
