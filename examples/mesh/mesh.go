// Package mesh is the bundled example mesh: three domains, where customer
// analytics consumes the data products of orders and payments.
//
//	orders      checkout events (producers)  ->  orders.placed
//	payments    transactions (producers)     ->  payments.settled
//	analytics   orders.placed                ->  analytics.big_orders
//	                                         ->  analytics.customer_totals
//	            payments.settled             ->  analytics.settled_eur
//
// Producers publish JSON to mesh.orders.in.checkout and
// mesh.payments.in.transactions; rows that break a contract land on
// mesh.<domain>._dlq with the rule they broke.
package mesh

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/domains"
)

var ts = &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}

// Order is the contract of orders.placed, derived from the struct.
type Order struct {
	OrderID    int64     `arrow:"order_id"`
	CustomerID string    `arrow:"customer_id"`
	Amount     float64   `arrow:"amount"`
	Currency   string    `arrow:"currency"`
	PlacedAt   time.Time `arrow:"placed_at"`
}

// OrderCodec converts between []Order and Arrow batches.
var OrderCodec = must(domains.NewCodec[Order]())

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

var (
	orderContract = domains.Contract{Version: 1, Schema: OrderCodec.Schema(), Rules: []domains.Rule{
		domains.Range("amount", 0.01, 100_000),
		domains.OneOf("currency", "EUR", "USD", "GBP"),
		domains.Pattern("customer_id", regexp.MustCompile(`^c-[0-9]+$`)),
	}}
	paymentSchema = arrow.NewSchema([]arrow.Field{
		{Name: "payment_id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "order_id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "amount", Type: arrow.PrimitiveTypes.Float64},
		{Name: "currency", Type: arrow.BinaryTypes.String},
		{Name: "status", Type: arrow.BinaryTypes.String},
	}, nil)
	paymentContract = domains.Contract{Version: 1, Schema: paymentSchema, Rules: []domains.Rule{
		domains.Range("amount", 0, 100_000),
		domains.OneOf("status", "authorized", "settled", "declined"),
	}}
	bigOrderContract = domains.Contract{Version: 1, Schema: arrow.NewSchema([]arrow.Field{
		{Name: "order_id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "customer_id", Type: arrow.BinaryTypes.String},
		{Name: "amount", Type: arrow.PrimitiveTypes.Float64},
		{Name: "currency", Type: arrow.BinaryTypes.String},
	}, nil)}
	totalsContract  = domains.Contract{Version: 1, Schema: TotalsSchema}
	settledContract = domains.Contract{Version: 1, Schema: arrow.NewSchema([]arrow.Field{
		{Name: "order_id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "amount_eur", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	}, nil)}
)

// Domains returns the example mesh.
func Domains() []*meshflow.Domain {
	orders := &meshflow.Domain{
		Domain: domains.Domain{Name: "orders", Owner: "team-checkout", Description: "orders placed in the shop",
			Inputs:  []domains.Input{{Name: "checkout", Contract: orderContract}},
			Outputs: []domains.Output{{Name: "placed", Description: "every valid order", Contract: orderContract}}},
		Build: func(b *meshflow.DomainPipeline) { b.Output("placed", b.Input("checkout")) },
	}
	payments := &meshflow.Domain{
		Domain: domains.Domain{Name: "payments", Owner: "team-payments", Description: "payment transactions",
			Inputs:  []domains.Input{{Name: "transactions", Contract: paymentContract}},
			Outputs: []domains.Output{{Name: "settled", Description: "settled payments", Contract: paymentContract}}},
		Build: func(b *meshflow.DomainPipeline) {
			b.Output("settled", b.Input("transactions").Filter("settled-only", meshflow.Col("status").Eq("settled")))
		},
	}
	analytics := &meshflow.Domain{
		Domain: domains.Domain{Name: "analytics", Owner: "team-bi", Description: "customer analytics",
			Inputs: []domains.Input{
				{Name: "orders", From: "orders.placed", Contract: orderContract},
				{Name: "payments", From: "payments.settled", Contract: paymentContract},
			},
			Outputs: []domains.Output{
				{Name: "big_orders", Description: "orders of 1000 or more", Contract: bigOrderContract},
				{Name: "settled_eur", Description: "settled amounts in EUR", Contract: settledContract},
				{Name: "customer_totals", Description: "every order with its customer's order count and total so far", Contract: totalsContract},
			}},
		Build: func(b *meshflow.DomainPipeline) {
			orders := b.Input("orders")
			big := orders.
				Filter("big", meshflow.Col("amount").Ge(1000)).
				Project("shape", "order_id", "customer_id", "amount", "currency")
			b.Output("big_orders", big)
			totals := orders.
				KeyBy("customer_id").
				Process("totals", NewCustomerTotals, meshflow.Parallelism(2), meshflow.OutputSchema(TotalsSchema))
			b.Output("customer_totals", totals)
			eur := b.Input("payments").
				Map("to-eur", meshflow.Set("amount_eur",
					meshflow.Col("amount").Mul(0.92))). // one rate for every currency: an example
				Project("settled", "order_id", "amount_eur")
			b.Output("settled_eur", eur)
		},
	}
	return []*meshflow.Domain{orders, payments, analytics}
}

// Generator makes example events, about one in fifty breaking a contract.
type Generator struct {
	rng   *rand.Rand
	order int64
	pay   int64
}

// NewGenerator returns a generator seeded with seed.
func NewGenerator(seed uint64) *Generator {
	return &Generator{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

var currencies = []string{"EUR", "USD", "GBP"}

// Checkout returns the next checkout event as JSON.
func (g *Generator) Checkout(now time.Time) []byte {
	g.order++
	amount := float64(g.rng.IntN(300_000)) / 100
	currency := currencies[g.rng.IntN(3)]
	customer := fmt.Sprintf("c-%d", g.rng.IntN(500))
	switch g.rng.IntN(50) {
	case 0:
		amount = -amount
	case 1:
		currency = "XYZ"
	case 2:
		customer = "anonymous"
	}
	return fmt.Appendf(nil, `{"order_id":%d,"customer_id":%q,"amount":%.2f,"currency":%q,"placed_at":%q}`,
		g.order, customer, amount, currency, now.UTC().Format(time.RFC3339Nano))
}

// Transaction returns the next payment transaction as JSON, for an order
// already placed.
func (g *Generator) Transaction() []byte {
	g.pay++
	status := []string{"authorized", "settled", "settled", "declined"}[g.rng.IntN(4)]
	if g.rng.IntN(50) == 0 {
		status = "lost"
	}
	return fmt.Appendf(nil, `{"payment_id":%d,"order_id":%d,"amount":%.2f,"currency":%q,"status":%q}`,
		g.pay, max(g.order, 1), float64(g.rng.IntN(300_000))/100, currencies[g.rng.IntN(3)], status)
}
