package expr

// ScratchLive is the number of intermediate buffers handed out and not yet
// freed: zero between evaluations.
func ScratchLive() int64 { return scratchMem.live.Load() }
