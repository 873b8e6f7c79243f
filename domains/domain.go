package domains

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/cluster/checkpoint"
	"github.com/meshflow/meshflow/internal/natsembed"
	"github.com/meshflow/meshflow/persistence/snapshotstore"
)

// Domain declares a data-mesh domain: who owns it, what it consumes and
// what it publishes. Its pipelines, restart policy and state namespace are
// its own.
type Domain struct {
	Name        string
	Owner       string
	Description string
	// Inputs are the ports the domain reads: data products of other
	// domains, or events published by producers.
	Inputs []Input
	// Outputs are the domain's data products.
	Outputs []Output
}

// Input is an input port.
type Input struct {
	Name     string
	Contract Contract
	// From is the data product read, as "<domain>.<port>"; empty for a port
	// fed by producers on the domain's own subject mesh.<domain>.in.<port>.
	From string
	// Format of the messages: JSON (default) or Arrow IPC.
	Format natsio.Format
	// Retention bounds the port's stream; only for a port fed by
	// producers (a data product's stream is bounded by its output port).
	Retention Retention
}

// Output is an output port: a data product.
type Output struct {
	Name        string
	Description string
	Contract    Contract
	// Format of the messages published: JSON (default) or Arrow IPC.
	Format natsio.Format
	// Retention bounds the port's stream.
	Retention Retention
}

var domainNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Validate checks names, contracts and references, reporting every problem.
func (d *Domain) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !domainNameRE.MatchString(d.Name) {
		add("domain name %q: use 1-63 lower-case letters, digits, '_' or '-'", d.Name)
	}
	if d.Owner == "" {
		add("domain %q: no owner", d.Name)
	}
	seen := map[string]bool{}
	port := func(kind, name string, c Contract) {
		if !domainNameRE.MatchString(name) || name == "in" || strings.HasPrefix(name, "_") {
			add("%s port %q: use lower-case letters, digits, '_' or '-' (not \"in\", not starting with '_')", kind, name)
		}
		if seen[kind+name] {
			add("%s port %q declared twice", kind, name)
		}
		seen[kind+name] = true
		if c.Schema == nil {
			add("%s port %q: contract has no schema", kind, name)
		}
		if c.Version < 1 {
			add("%s port %q: contract version %d, want 1 or more", kind, name, c.Version)
		}
	}
	for _, in := range d.Inputs {
		port("input", in.Name, in.Contract)
		if in.From != "" {
			dom, p, ok := strings.Cut(in.From, ".")
			if !ok || !domainNameRE.MatchString(dom) || !domainNameRE.MatchString(p) {
				add("input port %q: from %q, want \"<domain>.<port>\"", in.Name, in.From)
			} else if dom == d.Name {
				add("input port %q: a domain does not consume its own data product %q", in.Name, in.From)
			}
			if !in.Retention.IsZero() {
				add("input port %q: retention set, but the port reads %s, whose output port sets its stream's retention", in.Name, in.From)
			}
		}
		if err := in.Retention.Validate(); err != nil {
			add("input port %q: retention: %w", in.Name, err)
		}
	}
	for _, out := range d.Outputs {
		port("output", out.Name, out.Contract)
		if err := out.Retention.Validate(); err != nil {
			add("output port %q: retention: %w", out.Name, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("domains: %w", errors.Join(errs...))
	}
	return nil
}

// Subject namespace of the mesh:
//
//	mesh.<domain>.<port>        an output port (data product), in stream MESH_<DOMAIN>_<PORT>
//	mesh.<domain>.in.<port>     an input port fed by producers, in stream MESH_<DOMAIN>_IN_<PORT>
//	mesh.<domain>._dlq          rows refused at the domain's boundary, in stream MESH_<DOMAIN>__DLQ
//	mf.<domain>.>               the domain's private data plane (its jobs' internal edges)

// CheckpointStoreSubjects are the subjects a node's NATS user publishes to
// for the checkpoints of the jobs it runs: the JetStream API of the
// checkpoint metadata bucket (checkpoint.Bucket) and of the snapshot
// bucket (snapshotstore.DefaultBucket), and their data subjects. The
// buckets hold every job's checkpoints, so a user with these rights can
// read and change the checkpoints of every job: give them to the nodes'
// users, not to producers. The job's coordinator subjects are under
// mf.<job>.> (PrivateSubjects for a domain's job).
func CheckpointStoreSubjects() []string {
	var out []string
	for _, st := range []string{"KV_" + checkpoint.Bucket, "OBJ_" + snapshotstore.DefaultBucket} {
		out = append(out,
			"$JS.API.*.*."+st, "$JS.API.*.*."+st+".>", "$JS.API.*.*.*."+st+".>",
			"$JS.ACK."+st+".>")
	}
	return append(out, "$KV."+checkpoint.Bucket+".>", "$O."+snapshotstore.DefaultBucket+".>")
}

// JobName is the name of the job a domain's pipeline runs as; its full
// name (subjects, checkpoints) is "<domain>.pipeline".
const JobName = "pipeline"

// ProductSubject is the subject of output port port of domain.
func ProductSubject(domain, port string) string { return "mesh." + domain + "." + port }

// InputSubject is the subject producers publish to for an input port not
// fed by another domain.
func InputSubject(domain, port string) string { return "mesh." + domain + ".in." + port }

// DeadLetterSubject is the subject of the rows refused by domain's
// contracts.
func DeadLetterSubject(domain string) string { return "mesh." + domain + "._dlq" }

// PrivateSubjects is the wildcard of the domain's private namespace.
func PrivateSubjects(domain string) string { return "mf." + domain + ".>" }

// StreamName is the JetStream stream holding subject (a mesh subject).
func StreamName(subject string) string {
	return strings.ToUpper(streamNameReplacer.Replace(subject))
}

var streamNameReplacer = strings.NewReplacer(".", "_", "-", "_")

// InputSubjectOf is the subject an input port reads.
func (d *Domain) InputSubjectOf(in Input) string {
	if in.From == "" {
		return InputSubject(d.Name, in.Name)
	}
	dom, p, _ := strings.Cut(in.From, ".")
	return ProductSubject(dom, p)
}

// ConsumerName is the durable consumer through which domain reads its
// input port port.
func ConsumerName(domain, port string) string { return domain + "_" + port }

// InboxPrefix is the inbox prefix of NATS user user on the embedded
// server: replies to its requests (JetStream API answers, acknowledgements
// of its publications, messages it pulls) arrive under InboxPrefix(user)+".",
// which no other user may subscribe to. Its connections set it with
// nats.CustomInboxPrefix; the nats CLI with --inbox-prefix.
func InboxPrefix(user string) string { return "_INBOX_" + user }

// CatalogSubject is where a running mesh answers requests with its
// catalog: the domains, their ports, contracts and live counts.
const CatalogSubject = "mf._catalog.domains"

// ContractsBucket is the JetStream key-value bucket where a mesh records
// the output contracts it runs, one key "<domain>.<port>" each.
const ContractsBucket = "MESHFLOW_CONTRACTS"

// contractsRead are the JetStream API subjects of reading one contract
// with a direct get by key (nats kv get MESHFLOW_CONTRACTS <domain>.<port>):
// the bucket's stream info, and the direct get of its keys. Watching,
// listing keys, history, putting and deleting all need more.
var contractsRead = []string{
	"$JS.API.STREAM.INFO.KV_" + ContractsBucket,
	"$JS.API.DIRECT.GET.KV_" + ContractsBucket + ".$KV." + ContractsBucket + ".>",
}

// DurableConsumerSubjects are the subjects of the JetStream API and
// acknowledgements of the durable consumer durable on stream: creating,
// updating, reading its info, deleting it, pulling from it and
// acknowledging its messages. Granted to its owner, denied to everyone
// else.
func DurableConsumerSubjects(stream, durable string) []string {
	return []string{
		"$JS.API.CONSUMER.*." + stream + "." + durable,          // CREATE, INFO, DELETE, PAUSE, UNPIN, RESET
		"$JS.API.CONSUMER.*." + stream + "." + durable + ".>",   // CREATE with a filter subject
		"$JS.API.CONSUMER.*.*." + stream + "." + durable,        // MSG.NEXT, DURABLE.CREATE, LEADER.STEPDOWN
		"$JS.ACK." + stream + "." + durable + ".>",              // acknowledgements
		"$JS.API.CONSUMER.*.*." + stream + "." + durable + ".>", // (no such API today: keeps the set closed)
	}
}

// StreamReaderSubjects are the JetStream API subjects a reader of stream
// needs: its info,
// getting messages, and consumers of its own (ephemeral or ordered, named
// in the subject as nats.go and the nats CLI do) that it may pull from,
// acknowledge and delete. The legacy forms that take the consumer's name
// from the request body only ($JS.API.CONSUMER.CREATE.<stream>,
// $JS.API.CONSUMER.DURABLE.CREATE.<stream>.<name>) are left out, so that
// the name of every consumer touched is in the subject, where a deny
// pattern can protect it.
func StreamReaderSubjects(stream string) []string {
	return []string{
		"$JS.API.STREAM.INFO." + stream,
		"$JS.API.STREAM.MSG.GET." + stream,
		"$JS.API.DIRECT.GET." + stream,
		"$JS.API.DIRECT.GET." + stream + ".>",
		"$JS.API.CONSUMER.CREATE." + stream + ".*",
		"$JS.API.CONSUMER.CREATE." + stream + ".*.>",
		"$JS.API.CONSUMER.INFO." + stream + ".*",
		"$JS.API.CONSUMER.DELETE." + stream + ".*",
		"$JS.API.CONSUMER.MSG.NEXT." + stream + ".*",
		"$JS.ACK." + stream + ".*.>",
	}
}

// User returns the NATS user of the domain on the embedded server. It may:
//   - publish to its own namespace: mesh.<domain>.> (its data products,
//     dead letters and inputs) and its private mf.<domain>.>;
//   - subscribe to those and to the data products it declared as inputs;
//   - create, update and read the info of its own streams (inputs fed by
//     producers, data products, dead letters), and read the info of the
//     streams of the data products it reads; never delete or purge them;
//   - create, pull from and acknowledge only its own durable consumers,
//     ConsumerName(domain, port) on the stream of each input port;
//   - receive replies under its own InboxPrefix(domain) only.
//
// It reaches no other consumer, in particular not the durable consumers
// other domains read its data products through.
func (d *Domain) User(password string) natsembed.User {
	own := []string{"mesh." + d.Name + ".>", PrivateSubjects(d.Name)}
	var ownStreams []string
	for _, out := range d.Outputs {
		ownStreams = append(ownStreams, StreamName(ProductSubject(d.Name, out.Name)))
	}
	ownStreams = append(ownStreams, StreamName(DeadLetterSubject(d.Name)))
	pub := slices.Clone(own)
	pub = append(pub, "$JS.API.INFO", "$JS.API.STREAM.NAMES")
	var read []string
	for _, in := range d.Inputs {
		subj := d.InputSubjectOf(in)
		st := StreamName(subj)
		if in.From == "" {
			ownStreams = append(ownStreams, st)
		} else {
			read = append(read, subj)
			pub = append(pub, "$JS.API.STREAM.INFO."+st)
		}
		pub = append(pub, DurableConsumerSubjects(st, ConsumerName(d.Name, in.Name))...)
	}
	for _, st := range ownStreams {
		pub = append(pub, "$JS.API.STREAM.CREATE."+st, "$JS.API.STREAM.UPDATE."+st, "$JS.API.STREAM.INFO."+st,
			"$JS.API.STREAM.MSG.GET."+st, "$JS.API.DIRECT.GET."+st, "$JS.API.DIRECT.GET."+st+".>")
	}
	sub := append(slices.Clone(own), read...)
	sub = append(sub, InboxPrefix(d.Name)+".>")
	return natsembed.User{Name: d.Name, Password: password, Publish: pub, Subscribe: sub}
}

// ProducerUser returns the NATS user of producers and operators of the
// mesh made of the domains mesh, on the embedded server. It may:
//   - publish events to the input ports fed by producers,
//     mesh.<domain>.in.<port>, and nothing else of the mesh's subjects;
//   - read the data products and dead letters: subscribe to their
//     subjects, read their streams' info and messages, and create, pull
//     from, acknowledge and delete consumers of its own on those streams
//     (ephemeral or ordered; a durable one it names is its own too), but
//     not the domains' durable consumers, whose names it may not use;
//   - ask the running mesh for its catalog (CatalogSubject);
//   - read one output contract by key from ContractsBucket with a direct
//     get (nats kv get MESHFLOW_CONTRACTS <domain>.<port>); not watch,
//     list, put or delete;
//   - receive replies under its own InboxPrefix(name) only;
//   - list the domains' checkpoints (read the checkpoint bucket) and ask
//     their jobs, and pipelines (jobs of one-token names), for a checkpoint
//     or a savepoint (meshflow checkpoints, meshflow savepoint), and for
//     their status (meshflow status).
//
// It can neither create, update, delete nor purge any stream, nor touch a
// consumer of an input port, nor read another user's inbox or
// acknowledgements.
func ProducerUser(name, password string, mesh []*Domain) natsembed.User {
	pub := []string{CatalogSubject, "$JS.API.INFO", "$JS.API.STREAM.NAMES"}
	pub = append(pub, contractsRead...)
	pub = append(pub, StreamReaderSubjects("KV_"+checkpoint.Bucket)...)
	pub = append(pub, checkpoint.TriggerSubject("*"), actors.StatusSubject("*"))
	sub := []string{InboxPrefix(name) + ".>"}
	var deny []string
	for _, d := range mesh {
		readable := []string{DeadLetterSubject(d.Name)}
		for _, out := range d.Outputs {
			readable = append(readable, ProductSubject(d.Name, out.Name))
		}
		for _, s := range readable {
			sub = append(sub, s)
			pub = append(pub, StreamReaderSubjects(StreamName(s))...)
		}
		pub = append(pub, checkpoint.TriggerSubject(d.Name+"."+JobName), actors.StatusSubject(d.Name+"."+JobName))
		for _, in := range d.Inputs {
			if in.From == "" {
				pub = append(pub, InputSubject(d.Name, in.Name))
				continue
			}
			deny = append(deny, DurableConsumerSubjects(StreamName(d.InputSubjectOf(in)), ConsumerName(d.Name, in.Name))...)
		}
	}
	return natsembed.User{Name: name, Password: password, Publish: pub, Subscribe: sub, DenyPublish: deny}
}
