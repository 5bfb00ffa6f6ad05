package schema_test

import (
	"math"
	"math/big"
	"time"
)

func nanValue() float64 { return math.NaN() }

func timeMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

func ratValue(a, b int64) *big.Rat { return big.NewRat(a, b) }
