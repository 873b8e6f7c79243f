package expr_test

import "github.com/meshflow/meshflow/internal/expr"

type q2Case struct {
	name string
	e    expr.Expr
}

func q2Exprs() []q2Case {
	auction := expr.Col("auction")
	return []q2Case{
		{"sub-div-mul", auction.Sub(auction.Div(123).Mul(123)).Eq(0)},
		{"mod", auction.Mod(123).Eq(0)},
	}
}
