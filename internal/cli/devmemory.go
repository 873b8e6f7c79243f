package cli

import "runtime/debug"

// devMemoryLimit is the soft memory limit of `meshflow dev` (see
// runtime/debug.SetMemoryLimit). Most of what the process holds belongs to
// its embedded NATS server and stays live (the blocks of each busy stream,
// the message ids of the duplicate window); the Go collector's default
// lets the heap grow to twice that before it collects. Under the limit it
// collects sooner instead, which costs some CPU.
const devMemoryLimit = 170 << 20

// limitDevMemory sets the process's soft memory limit to devMemoryLimit,
// unless GOMEMLIMIT in the environment sets one, and returns what restores
// the previous limit.
func limitDevMemory(env *Env) (restore func()) {
	if env.getenv("GOMEMLIMIT") != "" {
		return func() {}
	}
	prev := debug.SetMemoryLimit(devMemoryLimit)
	return func() { debug.SetMemoryLimit(prev) }
}
