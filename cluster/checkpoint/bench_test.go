package checkpoint

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/meshflow/meshflow/messages/pb"
)

// BenchmarkCoordinatorCheckpoint measures the state machine alone: one
// complete checkpoint of n tasks per op (trigger, persisted, n acks,
// committed), and reports the cost per ack.
func BenchmarkCoordinatorCheckpoint(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("tasks=%d", n), func(b *testing.B) {
			tasks := make([]string, n)
			for i := range tasks {
				tasks[i] = TaskName("op", i)
			}
			cfg := DefaultConfig("job", tasks)
			c := New(cfg, Restored{})
			now := t0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := uint64(i + 1)
				now = now.Add(time.Millisecond)
				c.Step(Trigger{Now: now, Token: 1})
				c.Step(Persisted{Now: now, ID: id})
				for _, task := range tasks {
					c.Step(Ack{Now: now, ID: id, Task: task, Handle: Handle{Object: "o", Size: 1}})
				}
				if acts := c.Step(Committed{Now: now, ID: id}); len(acts) == 0 {
					b.Fatal("no completion")
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/ack")
		})
	}
}

// BenchmarkCheckpointRoundTrip measures one on-demand checkpoint of 4 tasks
// over the embedded NATS server, from trigger to completion:
//
//   - driver: Driver.Trigger (actor, coordinator, I/O goroutine);
//   - floor: the same NATS and KV traffic done inline by the benchmark
//     (attempt write, INJECT, 4 acks, meta + latest CAS, COMPLETE, and the
//     retention delete), the least any coordinator must do.
func BenchmarkCheckpointRoundTrip(b *testing.B) {
	tasks := []string{"src/0", "map/0", "map/1", "sink/0"}
	b.Run("driver", func(b *testing.B) {
		e := newDriverEnv(b)
		e.startFakeTasks(&fakeTasks{job: "bench", tasks: tasks, noUpload: true})
		cfg := DefaultConfig("bench", tasks)
		cfg.Interval = time.Hour
		d, err := StartDriver(e.ctx, DriverConfig{NATS: e.nc, System: e.sys, Store: e.store,
			Deleter: nopDeleter{}, Config: cfg})
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := d.Trigger(e.ctx, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("floor", func(b *testing.B) {
		e := newDriverEnv(b)
		e.startFakeTasks(&fakeTasks{job: "bench", tasks: tasks, noUpload: true})
		acks := make(chan *nats.Msg, 64)
		sub, err := e.nc.ChanSubscribe(AckSubject("bench"), acks)
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Unsubscribe()
		publish := func(cmd *pb.CheckpointCommand) {
			data, _ := proto.Marshal(cmd)
			if err := e.nc.Publish(CommandSubject("bench"), data); err != nil {
				b.Fatal(err)
			}
		}
		ctx := e.ctx
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			id := uint64(i + 1)
			if err := e.store.SetAttempt(ctx, "bench", id); err != nil {
				b.Fatal(err)
			}
			publish(&pb.CheckpointCommand{Kind: pb.CheckpointCommand_KIND_INJECT, Id: id})
			meta := &pb.CheckpointMeta{Job: "bench", Id: id}
			for range tasks {
				m := <-acks
				var a pb.CheckpointAck
				if err := proto.Unmarshal(m.Data, &a); err != nil {
					b.Fatal(err)
				}
				meta.Tasks = append(meta.Tasks, &pb.TaskSnapshot{Operator: a.Operator, Instance: a.Instance, Object: a.Object})
			}
			if err := e.store.Commit(ctx, meta); err != nil {
				b.Fatal(err)
			}
			publish(&pb.CheckpointCommand{Kind: pb.CheckpointCommand_KIND_COMPLETE, Id: id})
			if id > 3 {
				if err := e.store.Delete(ctx, "bench", id-3); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}

type nopDeleter struct{}

func (nopDeleter) DeleteCheckpoint(context.Context, string, uint64) error { return nil }
