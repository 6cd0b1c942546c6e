// Package greeter is a Sky Island example: exported functions called with literals.
package greeter

import "fmt"

// Greet returns a greeting; the answer is what fmt.Print prints of the result.
func Greet(name string) string {
	return fmt.Sprintf("Hello, %s!", name)
}

// Summary is printed with fmt.Print, as {Min:1 Max:3 Mean:2}.
type Summary struct {
	Min, Max int
	Mean     float64
}

// Stats takes any number of integers (a variadic call: Stats(3, 1, 2)).
func Stats(xs ...int) Summary {
	s := Summary{Min: xs[0], Max: xs[0]}
	total := 0
	for _, x := range xs {
		if x < s.Min {
			s.Min = x
		}
		if x > s.Max {
			s.Max = x
		}
		total += x
	}
	s.Mean = float64(total) / float64(len(xs))
	return s
}

// String makes fmt.Print show field names.
func (s Summary) String() string {
	return fmt.Sprintf("{Min:%d Max:%d Mean:%g}", s.Min, s.Max, s.Mean)
}
