package main

import (
	"context"
	"fmt"
	"io"
)

const usage = `usage: sidecar <command> [flags]

commands:
  serve                        run the sidecar (the default when no command is given)
  features transform           turn a raw CSV into a model's input matrix (the training matrix)
  features fingerprint         print a feature spec's SHA-256 fingerprint
  features golden              check (or -write) a spec's golden vectors file
  bench                        the load harness: the sidecar against a no-op server and ONNX Runtime
  help                         this text

Run "sidecar <command> -h" for a command's flags.
`

// run executes one command line and returns the process exit code. ctx is cancelled on SIGINT or
// SIGTERM.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (len(args[0]) > 0 && args[0][0] == '-') {
		return serve(ctx, args, stdout, stderr)
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "features":
		return featuresCmd(ctx, args[1:], stdout, stderr)
	case "bench":
		return benchCmd(ctx, args[1:], stdout, stderr)
	case "bench-noop": // the bench's floor server, started by bench; not in the usage text
		return benchNoopCmd(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "sidecar: unknown command %q\n\n%s", args[0], usage)
	return 2
}
