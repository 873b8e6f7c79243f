package meshflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/messages"
)

// ContractsBucket is the JetStream key-value bucket where a mesh records
// the output contracts it runs, one key "<domain>.<port>" each: what the
// next deployment is checked against. Producers read a contract by key
// with a direct get (nats kv get MESHFLOW_CONTRACTS orders.placed); see
// domains.ProducerUser.
const ContractsBucket = domains.ContractsBucket

// deployedContract is a recorded output contract.
type deployedContract struct {
	Version   int      `json:"version"`
	Schema    []byte   `json:"schema"` // an Arrow IPC stream of an empty batch
	Consumers []string `json:"consumers"`
}

// checkDeployment checks every output contract of the mesh against the one
// recorded by the previous deployment (domains.CheckEvolution), naming the
// consumers — of the previous deployment and of this one — that would
// break; then records this deployment's contracts.
func (m *Mesh) checkDeployment(ctx context.Context, js jetstream.JetStream) error {
	// Readers get keys directly (AllowDirect, which nats.go sets on every
	// bucket it creates): the only read the producers' user is given.
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: ContractsBucket, History: 5})
	if err != nil {
		return fmt.Errorf("contracts bucket: %w", err)
	}
	consumers := map[string][]string{}
	for _, d := range m.domains {
		for _, in := range d.Inputs {
			if in.From != "" {
				consumers[in.From] = append(consumers[in.From], d.Name+"."+in.Name)
			}
		}
	}
	type record struct {
		key string
		val []byte
	}
	var records []record
	var errs []error
	for _, d := range m.domains {
		for _, out := range d.Outputs {
			key := d.Name + "." + out.Name
			who := slices.Clone(consumers[key])
			if e, err := kv.Get(ctx, key); err == nil {
				var prev deployedContract
				if err := json.Unmarshal(e.Value(), &prev); err != nil {
					return fmt.Errorf("contract %s: bad record: %w", key, err)
				}
				schema, err := schemaFromIPC(prev.Schema)
				if err != nil {
					return fmt.Errorf("contract %s: bad record: %w", key, err)
				}
				for _, c := range prev.Consumers {
					if !slices.Contains(who, c) {
						who = append(who, c)
					}
				}
				running := domains.Contract{Version: prev.Version, Schema: schema}
				if err := domains.CheckEvolution(d.Name, out.Name, running, out.Contract, who); err != nil {
					errs = append(errs, err)
					continue
				}
			} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
				return fmt.Errorf("contract %s: %w", key, err)
			}
			sch, err := schemaToIPC(out.Contract.Schema)
			if err != nil {
				return fmt.Errorf("contract %s: %w", key, err)
			}
			val, err := json.Marshal(deployedContract{Version: out.Contract.Version, Schema: sch, Consumers: consumers[key]})
			if err != nil {
				return err
			}
			records = append(records, record{key, val})
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for _, r := range records {
		if _, err := kv.Put(ctx, r.key, r.val); err != nil {
			return fmt.Errorf("contract %s: %w", r.key, err)
		}
	}
	return nil
}

func schemaToIPC(s *arrow.Schema) ([]byte, error) {
	cols := emptyColumns(s)
	rec := array.NewRecordBatch(s, cols, 0)
	for _, c := range cols {
		c.Release()
	}
	defer rec.Release()
	return messages.EncodeIPC(rec)
}

func emptyColumns(s *arrow.Schema) []arrow.Array {
	cols := make([]arrow.Array, s.NumFields())
	for i, f := range s.Fields() {
		cols[i] = array.MakeArrayOfNull(memory.DefaultAllocator, f.Type, 0)
	}
	return cols
}

func schemaFromIPC(b []byte) (*arrow.Schema, error) {
	recs, s, err := messages.DecodeIPC(memory.DefaultAllocator, b)
	for _, r := range recs {
		r.Release()
	}
	return s, err
}
