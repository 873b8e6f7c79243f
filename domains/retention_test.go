package domains_test

import (
	"strings"
	"testing"
	"time"

	"github.com/meshflow/meshflow/domains"
)

func TestRetentionValidate(t *testing.T) {
	tests := []struct {
		name string
		r    domains.Retention
		want []string // substrings of the error; none: valid
	}{
		{name: "zero", r: domains.Retention{}},
		{name: "limits", r: domains.Retention{MaxAge: time.Hour, MaxBytes: 64 << 20, MaxMsgs: 1000}},
		{name: "unlimited", r: domains.Retention{MaxAge: domains.Unlimited, MaxBytes: domains.Unlimited, MaxMsgs: domains.Unlimited}},
		{name: "negative", r: domains.Retention{MaxAge: -time.Hour, MaxBytes: -5, MaxMsgs: -2},
			want: []string{"max age -1h0m0s is negative", "max bytes -5 is negative", "max messages -2 is negative"}},
		{name: "too short", r: domains.Retention{MaxAge: time.Millisecond}, want: []string{"max age 1ms is below the minimum of 1s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.r.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			for _, w := range tt.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v does not mention %q", err, w)
				}
			}
		})
	}
}

func TestRetentionOrAndString(t *testing.T) {
	def := domains.Retention{MaxAge: time.Hour, MaxBytes: 64 << 20}
	tests := []struct {
		name string
		r    domains.Retention
		want domains.Retention
		str  string
	}{
		{name: "zero takes the default", r: domains.Retention{}, want: def,
			str: "max age 1h0m0s, max bytes 64 MiB, max messages unlimited"},
		{name: "fields override one by one", r: domains.Retention{MaxBytes: 1 << 30, MaxMsgs: 10},
			want: domains.Retention{MaxAge: time.Hour, MaxBytes: 1 << 30, MaxMsgs: 10},
			str:  "max age 1h0m0s, max bytes 1 GiB, max messages 10"},
		{name: "unlimited overrides", r: domains.Retention{MaxAge: domains.Unlimited, MaxBytes: 1500},
			want: domains.Retention{MaxAge: domains.Unlimited, MaxBytes: 1500},
			str:  "max age unlimited, max bytes 1500 B, max messages unlimited"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.r.Or(def)
			if got != tt.want {
				t.Errorf("Or: %+v, want %+v", got, tt.want)
			}
			if got.String() != tt.str {
				t.Errorf("String: %q, want %q", got.String(), tt.str)
			}
		})
	}
}

func TestValidateRetention(t *testing.T) {
	d := &domains.Domain{Name: "analytics", Owner: "team-bi",
		Inputs: []domains.Input{
			{Name: "orders", From: "orders.placed", Contract: placed, Retention: domains.Retention{MaxAge: time.Hour}},
			{Name: "clicks", Contract: placed, Retention: domains.Retention{MaxBytes: -3}},
		},
		Outputs: []domains.Output{{Name: "daily", Contract: placed, Retention: domains.Retention{MaxAge: time.Millisecond}}}}
	err := d.Validate()
	for _, want := range []string{
		`input port "orders": retention set, but the port reads orders.placed`,
		`input port "clicks": retention: max bytes -3 is negative`,
		`output port "daily": retention: max age 1ms is below the minimum`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
	ok := &domains.Domain{Name: "orders", Owner: "team-orders",
		Inputs:  []domains.Input{{Name: "checkout", Contract: placed, Retention: domains.Retention{MaxAge: time.Hour}}},
		Outputs: []domains.Output{{Name: "placed", Contract: placed, Retention: domains.Retention{MaxBytes: 1 << 30, MaxMsgs: domains.Unlimited}}}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}
