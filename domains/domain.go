package domains

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/internal/natsembed"
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

// User returns the NATS user of the domain on the embedded server: it may
// use its own namespace (mesh.<domain>.> and its private mf.<domain>.>),
// read the data products it declared as inputs, and reach the JetStream API
// only for the streams of those subjects.
func (d *Domain) User(password string) natsembed.User {
	own := []string{"mesh." + d.Name + ".>", PrivateSubjects(d.Name)}
	var ownStreams, readStreams []string
	for _, out := range d.Outputs {
		ownStreams = append(ownStreams, StreamName(ProductSubject(d.Name, out.Name)))
	}
	ownStreams = append(ownStreams, StreamName(DeadLetterSubject(d.Name)))
	var read []string
	for _, in := range d.Inputs {
		subj := d.InputSubjectOf(in)
		if in.From == "" {
			ownStreams = append(ownStreams, StreamName(subj))
			continue
		}
		read = append(read, subj)
		readStreams = append(readStreams, StreamName(subj))
	}
	pub := slices.Clone(own)
	pub = append(pub, "$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST")
	consumers := func(st string) []string {
		return []string{"$JS.API.CONSUMER.*." + st, "$JS.API.CONSUMER.*." + st + ".>",
			"$JS.API.CONSUMER.DURABLE.CREATE." + st + ".>", "$JS.API.CONSUMER.MSG.NEXT." + st + ".>", "$JS.ACK." + st + ".>"}
	}
	for _, st := range ownStreams {
		pub = append(pub, "$JS.API.STREAM.*."+st, "$JS.API.STREAM.MSG.GET."+st)
		pub = append(pub, consumers(st)...)
	}
	for _, st := range readStreams {
		pub = append(pub, "$JS.API.STREAM.INFO."+st)
		pub = append(pub, consumers(st)...)
	}
	sub := append(slices.Clone(own), read...)
	sub = append(sub, "_INBOX.>")
	return natsembed.User{Name: d.Name, Password: password, Publish: pub, Subscribe: sub}
}

// ProducerUser returns the NATS user of producers and operators on the
// embedded server: it may publish events to the input ports fed by
// producers, read every data product and dead-letter stream, and ask a
// running mesh for its catalog; it cannot publish data products nor touch
// private subjects.
func ProducerUser(name, password string) natsembed.User {
	return natsembed.User{Name: name, Password: password,
		Publish: []string{"mesh.*.in.>", "mf._catalog.domains",
			"$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST", "$JS.API.STREAM.INFO.>",
			"$JS.API.CONSUMER.CREATE.>", "$JS.API.CONSUMER.INFO.>", "$JS.API.CONSUMER.DELETE.>",
			"$JS.API.CONSUMER.MSG.NEXT.>", "$JS.ACK.>", "$JS.FC.>"},
		Subscribe: []string{"mesh.>", "_INBOX.>"},
	}
}
