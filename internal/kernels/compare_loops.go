package kernels

// The comparison loops below write one result bit per row into out (which
// holds at least (len(a)+7)/8 bytes), eight rows per output byte without
// branches. Column-vs-column comparisons with > and >= reuse < and <= with
// the operands swapped.

// b2u converts a bool to 0 or 1; the compiler lowers it to a flag set.
func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// eqScalar sets bit i of out when a[i] is equal to s.
func eqScalar[T number](a []T, s T, out []byte) {
	full := len(a) / 8
	out = out[:(len(a)+7)/8]
	for i := range full {
		v := (*[8]T)(a[i*8 : i*8+8])
		out[i] = b2u(v[0] == s) | b2u(v[1] == s)<<1 | b2u(v[2] == s)<<2 | b2u(v[3] == s)<<3 |
			b2u(v[4] == s)<<4 | b2u(v[5] == s)<<5 | b2u(v[6] == s)<<6 | b2u(v[7] == s)<<7
	}
	if rest := a[full*8:]; len(rest) > 0 {
		var b uint8
		for k, x := range rest {
			b |= b2u(x == s) << k
		}
		out[full] = b
	}
}

// neScalar sets bit i of out when a[i] is not equal to s.
func neScalar[T number](a []T, s T, out []byte) {
	full := len(a) / 8
	out = out[:(len(a)+7)/8]
	for i := range full {
		v := (*[8]T)(a[i*8 : i*8+8])
		out[i] = b2u(v[0] != s) | b2u(v[1] != s)<<1 | b2u(v[2] != s)<<2 | b2u(v[3] != s)<<3 |
			b2u(v[4] != s)<<4 | b2u(v[5] != s)<<5 | b2u(v[6] != s)<<6 | b2u(v[7] != s)<<7
	}
	if rest := a[full*8:]; len(rest) > 0 {
		var b uint8
		for k, x := range rest {
			b |= b2u(x != s) << k
		}
		out[full] = b
	}
}

// ltScalar sets bit i of out when a[i] is less than s.
func ltScalar[T number](a []T, s T, out []byte) {
	full := len(a) / 8
	out = out[:(len(a)+7)/8]
	for i := range full {
		v := (*[8]T)(a[i*8 : i*8+8])
		out[i] = b2u(v[0] < s) | b2u(v[1] < s)<<1 | b2u(v[2] < s)<<2 | b2u(v[3] < s)<<3 |
			b2u(v[4] < s)<<4 | b2u(v[5] < s)<<5 | b2u(v[6] < s)<<6 | b2u(v[7] < s)<<7
	}
	if rest := a[full*8:]; len(rest) > 0 {
		var b uint8
		for k, x := range rest {
			b |= b2u(x < s) << k
		}
		out[full] = b
	}
}

// leScalar sets bit i of out when a[i] is less than or equal to s.
func leScalar[T number](a []T, s T, out []byte) {
	full := len(a) / 8
	out = out[:(len(a)+7)/8]
	for i := range full {
		v := (*[8]T)(a[i*8 : i*8+8])
		out[i] = b2u(v[0] <= s) | b2u(v[1] <= s)<<1 | b2u(v[2] <= s)<<2 | b2u(v[3] <= s)<<3 |
			b2u(v[4] <= s)<<4 | b2u(v[5] <= s)<<5 | b2u(v[6] <= s)<<6 | b2u(v[7] <= s)<<7
	}
	if rest := a[full*8:]; len(rest) > 0 {
		var b uint8
		for k, x := range rest {
			b |= b2u(x <= s) << k
		}
		out[full] = b
	}
}

// gtScalar sets bit i of out when a[i] is greater than s.
func gtScalar[T number](a []T, s T, out []byte) {
	full := len(a) / 8
	out = out[:(len(a)+7)/8]
	for i := range full {
		v := (*[8]T)(a[i*8 : i*8+8])
		out[i] = b2u(v[0] > s) | b2u(v[1] > s)<<1 | b2u(v[2] > s)<<2 | b2u(v[3] > s)<<3 |
			b2u(v[4] > s)<<4 | b2u(v[5] > s)<<5 | b2u(v[6] > s)<<6 | b2u(v[7] > s)<<7
	}
	if rest := a[full*8:]; len(rest) > 0 {
		var b uint8
		for k, x := range rest {
			b |= b2u(x > s) << k
		}
		out[full] = b
	}
}

// geScalar sets bit i of out when a[i] is greater than or equal to s.
func geScalar[T number](a []T, s T, out []byte) {
	full := len(a) / 8
	out = out[:(len(a)+7)/8]
	for i := range full {
		v := (*[8]T)(a[i*8 : i*8+8])
		out[i] = b2u(v[0] >= s) | b2u(v[1] >= s)<<1 | b2u(v[2] >= s)<<2 | b2u(v[3] >= s)<<3 |
			b2u(v[4] >= s)<<4 | b2u(v[5] >= s)<<5 | b2u(v[6] >= s)<<6 | b2u(v[7] >= s)<<7
	}
	if rest := a[full*8:]; len(rest) > 0 {
		var b uint8
		for k, x := range rest {
			b |= b2u(x >= s) << k
		}
		out[full] = b
	}
}

// eqArrays sets bit i of out when a[i] is equal to b[i]; len(b) == len(a).
func eqArrays[T number](a, b []T, out []byte) {
	full := len(a) / 8
	b = b[:len(a)]
	out = out[:(len(a)+7)/8]
	for i := range full {
		v := (*[8]T)(a[i*8 : i*8+8])
		w := (*[8]T)(b[i*8 : i*8+8])
		out[i] = b2u(v[0] == w[0]) | b2u(v[1] == w[1])<<1 | b2u(v[2] == w[2])<<2 | b2u(v[3] == w[3])<<3 |
			b2u(v[4] == w[4])<<4 | b2u(v[5] == w[5])<<5 | b2u(v[6] == w[6])<<6 | b2u(v[7] == w[7])<<7
	}
	if full*8 < len(a) {
		var r uint8
		for k := full * 8; k < len(a); k++ {
			r |= b2u(a[k] == b[k]) << (k - full*8)
		}
		out[full] = r
	}
}

// neArrays sets bit i of out when a[i] is not equal to b[i]; len(b) == len(a).
func neArrays[T number](a, b []T, out []byte) {
	full := len(a) / 8
	b = b[:len(a)]
	out = out[:(len(a)+7)/8]
	for i := range full {
		v := (*[8]T)(a[i*8 : i*8+8])
		w := (*[8]T)(b[i*8 : i*8+8])
		out[i] = b2u(v[0] != w[0]) | b2u(v[1] != w[1])<<1 | b2u(v[2] != w[2])<<2 | b2u(v[3] != w[3])<<3 |
			b2u(v[4] != w[4])<<4 | b2u(v[5] != w[5])<<5 | b2u(v[6] != w[6])<<6 | b2u(v[7] != w[7])<<7
	}
	if full*8 < len(a) {
		var r uint8
		for k := full * 8; k < len(a); k++ {
			r |= b2u(a[k] != b[k]) << (k - full*8)
		}
		out[full] = r
	}
}

// ltArrays sets bit i of out when a[i] is less than b[i]; len(b) == len(a).
func ltArrays[T number](a, b []T, out []byte) {
	full := len(a) / 8
	b = b[:len(a)]
	out = out[:(len(a)+7)/8]
	for i := range full {
		v := (*[8]T)(a[i*8 : i*8+8])
		w := (*[8]T)(b[i*8 : i*8+8])
		out[i] = b2u(v[0] < w[0]) | b2u(v[1] < w[1])<<1 | b2u(v[2] < w[2])<<2 | b2u(v[3] < w[3])<<3 |
			b2u(v[4] < w[4])<<4 | b2u(v[5] < w[5])<<5 | b2u(v[6] < w[6])<<6 | b2u(v[7] < w[7])<<7
	}
	if full*8 < len(a) {
		var r uint8
		for k := full * 8; k < len(a); k++ {
			r |= b2u(a[k] < b[k]) << (k - full*8)
		}
		out[full] = r
	}
}

// leArrays sets bit i of out when a[i] is less than or equal to b[i]; len(b) == len(a).
func leArrays[T number](a, b []T, out []byte) {
	full := len(a) / 8
	b = b[:len(a)]
	out = out[:(len(a)+7)/8]
	for i := range full {
		v := (*[8]T)(a[i*8 : i*8+8])
		w := (*[8]T)(b[i*8 : i*8+8])
		out[i] = b2u(v[0] <= w[0]) | b2u(v[1] <= w[1])<<1 | b2u(v[2] <= w[2])<<2 | b2u(v[3] <= w[3])<<3 |
			b2u(v[4] <= w[4])<<4 | b2u(v[5] <= w[5])<<5 | b2u(v[6] <= w[6])<<6 | b2u(v[7] <= w[7])<<7
	}
	if full*8 < len(a) {
		var r uint8
		for k := full * 8; k < len(a); k++ {
			r |= b2u(a[k] <= b[k]) << (k - full*8)
		}
		out[full] = r
	}
}
