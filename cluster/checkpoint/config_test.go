package checkpoint

import (
	"errors"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"default", DefaultConfig("orders", []string{"src/0", "map/1"}), true},
		{"domain job", DefaultConfig("shop.orders", []string{"src/0"}), true},
		{"operator with slash", DefaultConfig("orders", []string{"a/b/0"}), true},
		{"no job", DefaultConfig("", []string{"src/0"}), false},
		{"wildcard job", DefaultConfig("orders.>", []string{"src/0"}), false},
		{"space in job", DefaultConfig("my orders", []string{"src/0"}), false},
		{"trailing dot", DefaultConfig("orders.", []string{"src/0"}), false},
		{"task without index", DefaultConfig("orders", []string{"src"}), false},
		{"task with bad index", DefaultConfig("orders", []string{"src/x"}), false},
		{"negative index", DefaultConfig("orders", []string{"src/-1"}), false},
		{"empty operator", DefaultConfig("orders", []string{"/0"}), false},
		{"duplicate task", DefaultConfig("orders", []string{"src/0", "src/0"}), false},
		{"negative interval", func() Config { c := DefaultConfig("o", nil); c.Interval = -1; return c }(), false},
		{"tolerable below -1", func() Config { c := DefaultConfig("o", nil); c.TolerableFailures = -2; return c }(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.ok && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrConfig) {
				t.Fatalf("Validate: %v, want ErrConfig", err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{Job: "o"}.withDefaults()
	if c.Interval != DefaultInterval || c.Timeout != DefaultTimeout || c.Retained != DefaultRetained || c.TolerableFailures != 0 {
		t.Fatalf("defaults %+v", c)
	}
	if d := DefaultConfig("o", nil); d.TolerableFailures != Unlimited {
		t.Fatalf("DefaultConfig tolerates %d failures, want unlimited", d.TolerableFailures)
	}
}

func TestTaskNames(t *testing.T) {
	for _, tc := range []struct {
		op  string
		idx int
	}{{"src", 0}, {"map", 12}, {"a/b", 3}} {
		op, idx, err := ParseTask(TaskName(tc.op, tc.idx))
		if err != nil || op != tc.op || idx != tc.idx {
			t.Errorf("round trip of %s/%d: %q %d %v", tc.op, tc.idx, op, idx, err)
		}
	}
}

func TestSubjects(t *testing.T) {
	for got, want := range map[string]string{
		CommandSubject("shop.orders"): "mf.shop.orders.ctl.ckpt.cmd",
		AckSubject("orders"):          "mf.orders.ctl.ckpt.ack",
		TriggerSubject("orders"):      "mf.orders.ctl.ckpt.trigger",
	} {
		if got != want {
			t.Errorf("subject %q, want %q", got, want)
		}
	}
}
