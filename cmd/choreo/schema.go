package main

import (
	"context"
	"io"
)

func runSchema(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return usagef("not yet available")
}
