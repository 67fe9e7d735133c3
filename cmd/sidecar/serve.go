package main

import (
	"context"
	"fmt"
	"io"
)

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "serve: being wired")
	return 1
}
