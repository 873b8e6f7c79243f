package cli

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/examples/mesh"
	"github.com/meshflow/meshflow/persistence"
)

// runDevMesh runs the example mesh with its generator and prints the
// domains' status every o.every until ctx is done.
func runDevMesh(ctx context.Context, env *Env, o devOptions, conns devConns, store persistence.Store, runOpts []meshflow.RunOption) error {
	defer limitDevMemory(env)()
	opts := []meshflow.RunOption{meshflow.WithNATS(conns.node), meshflow.WithState(store), meshflow.WithLogger(env.Logger),
		meshflow.WithRetention(o.retention())}
	opts = append(opts, runOpts...)
	if conns.domain != nil {
		opts = append(opts, meshflow.WithDomainConnect(conns.domain))
	}
	m, err := meshflow.NewMesh(mesh.Domains(), opts...)
	if err != nil {
		return err
	}
	js, err := jetstream.New(conns.producer)
	if err != nil {
		return err
	}
	auxCtx, stopAux := context.WithCancel(ctx)
	defer stopAux()
	var wg sync.WaitGroup
	var genErr error
	if o.generator {
		wg.Add(1)
		go func() {
			defer wg.Done()
			genErr = generateMesh(auxCtx, js, o.rate)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(o.every)
		defer t.Stop()
		for {
			select {
			case <-auxCtx.Done():
				return
			case <-t.C:
				fmt.Fprintln(env.Stdout, time.Now().Format(time.TimeOnly))
				if err := listDomains(env.Stdout, m.Status()); err != nil {
					return
				}
				fmt.Fprintln(env.Stdout)
			}
		}
	}()
	env.Logger.Info("running the example mesh", "domains", "orders, payments, analytics",
		"inputs", domains.InputSubject("orders", "checkout")+", "+domains.InputSubject("payments", "transactions"))
	runErr := m.Run(ctx)
	stopAux()
	wg.Wait()
	if errors.Is(runErr, context.Canceled) && ctx.Err() != nil {
		runErr = nil // Ctrl-C: drained and stopped cleanly
	}
	if errors.Is(genErr, context.Canceled) {
		genErr = nil
	}
	return errors.Join(runErr, genErr)
}

// generateMesh publishes checkout events and payment transactions at rate
// events per second (each) until ctx is done.
func generateMesh(ctx context.Context, js jetstream.JetStream, rate int) error {
	g := mesh.NewGenerator(uint64(time.Now().UnixNano()))
	checkout := domains.InputSubject("orders", "checkout")
	payments := domains.InputSubject("payments", "transactions")
	return publishLoop(ctx, js, rate, []string{checkout, payments}, func(publish func(string, []byte) error) error {
		if err := publish(checkout, g.Checkout(time.Now())); err != nil {
			return err
		}
		return publish(payments, g.Transaction())
	})
}
