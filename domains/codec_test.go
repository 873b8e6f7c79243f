package domains_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/domains"
)

type Order struct {
	OrderID  int64 `arrow:"order_id"`
	Customer string
	Amount   float64
	Coupon   *string
	Paid     bool
	Quantity int32
	PlacedAt time.Time
	Note     []byte
	Discount *float64
	internal int    //nolint:unused // unexported fields are ignored
	Ignored  string `arrow:"-"`
	HTTPCode uint16
}

func TestCodecSchema(t *testing.T) {
	c, err := domains.NewCodec[Order]()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range c.Schema().Fields() {
		got = append(got, fmt.Sprintf("%s:%s:%v", f.Name, f.Type, f.Nullable))
	}
	want := "order_id:int64:false customer:utf8:false amount:float64:false coupon:utf8:true paid:bool:false " +
		"quantity:int32:false placed_at:timestamp[us, tz=UTC]:false note:binary:false discount:float64:true http_code:uint16:false"
	if strings.Join(got, " ") != want {
		t.Fatalf("schema\n got %s\nwant %s", strings.Join(got, " "), want)
	}
}

func TestCodecRoundTrip(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	c, err := domains.NewCodec[Order]()
	if err != nil {
		t.Fatal(err)
	}
	coupon, disc := "WELCOME", 0.1
	rows := []Order{
		{OrderID: 1, Customer: "ada", Amount: 12.5, Coupon: &coupon, Paid: true, Quantity: 2, PlacedAt: time.UnixMicro(1_700_000_000_000_001).UTC(), Note: []byte{1, 2}, Discount: &disc, HTTPCode: 200},
		{OrderID: 2, Customer: "bob", Amount: 3, Quantity: -1, PlacedAt: time.UnixMicro(0).UTC(), Note: []byte{}, HTTPCode: 404},
	}
	rec := c.Encode(mem, rows)
	defer rec.Release()
	back, err := c.Decode(nil, rec)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, rows) {
		t.Fatalf("round trip\n got %+v\nwant %+v", back, rows)
	}
}

func TestCodecErrors(t *testing.T) {
	type bad struct {
		M map[string]int
		C chan int
	}
	if _, err := domains.NewCodec[bad](); err == nil || !strings.Contains(err.Error(), "field M") || !strings.Contains(err.Error(), "field C") {
		t.Fatalf("got %v, want errors naming M and C", err)
	}
	if _, err := domains.NewCodec[int](); err == nil {
		t.Fatal("accepted a non-struct")
	}
	type other struct {
		OrderID int32 `arrow:"order_id"`
	}
	c, _ := domains.NewCodec[Order]()
	oc, _ := domains.NewCodec[other]()
	if err := c.Compatible(oc.Schema()); err == nil {
		t.Fatal("compatible with a different schema")
	}
	nullable := arrow.NewSchema(append([]arrow.Field(nil), c.Schema().Fields()...), nil)
	f := nullable.Fields()
	f[1].Nullable = true
	if err := c.Compatible(arrow.NewSchema(f, nil)); err == nil || !strings.Contains(err.Error(), `"customer" is nullable`) {
		t.Fatalf("got %v", err)
	}
}

func TestContractOf(t *testing.T) {
	c, codec, err := domains.ContractOf[Order](3, domains.Range("amount", 0, 100))
	if err != nil {
		t.Fatal(err)
	}
	if c.Version != 3 || !c.Schema.Equal(codec.Schema()) || len(c.Rules) != 1 {
		t.Fatalf("contract %+v", c)
	}
	type bad struct{ F func() }
	if _, _, err := domains.ContractOf[bad](1); err == nil || !strings.Contains(err.Error(), "field F") {
		t.Fatalf("got %v", err)
	}
}
