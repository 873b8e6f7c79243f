package actors

import (
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"
)

// ReportSubscriptionError hands err to the node's NATS error handler as if
// the client had reported it for one of job's subscriptions (the client
// reports a slow consumer this way). It reports whether such a
// subscription exists yet.
func ReportSubscriptionError(n *Node, job string, err error) bool {
	n.mu.Lock()
	var sub *nats.Subscription
	for s, p := range n.subs {
		if p.g.Name == job {
			sub = s
			break
		}
	}
	n.mu.Unlock()
	if sub == nil {
		return false
	}
	n.cfg.NATS.ErrorHandler()(n.cfg.NATS, sub, err)
	return true
}

// Subscribed reports whether node n has subscribed to any subject of job.
func Subscribed(n *Node, job string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.subs {
		if p.g.Name == job {
			return true
		}
	}
	return false
}

// NodeAllocator is the allocator of node n's batches.
func NodeAllocator(n *Node) memory.Allocator { return n.cfg.Allocator }
