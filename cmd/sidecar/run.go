package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
)

const usage = `usage: sidecar <command> [flags]

commands:
  serve                  run the sidecar (the default when no command is given, or the first
                         argument is a flag: "sidecar -config c.yaml" is "sidecar serve -config c.yaml")
  features transform     turn a raw CSV or Parquet file into a model's input matrix (the training matrix)
  features fingerprint   print a feature spec's SHA-256 fingerprint
  features golden        check (or -write) a spec's golden vectors file
  profile build|show     build a model's drift reference profile from its training data, or show one
  drift merge            merge the drift sketches of many nodes (URLs or files): the fleet's drift table
  bench                  the load harness: the sidecar against a no-op server and ONNX Runtime
  migration              status, pause, resume, advance or roll back a running sidecar's migrations
  help                   this text

Each command prints its flags with -h: "sidecar serve -h", "sidecar features transform -h",
"sidecar features fingerprint -h", "sidecar features golden -h", "sidecar bench -h".
`

// run executes one command line and returns the process exit code. ctx is cancelled on SIGINT or
// SIGTERM.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if len(args) == 0 || (len(args[0]) > 0 && args[0][0] == '-') {
		return serve(ctx, args, stdout, stderr)
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "features":
		return featuresCmd(ctx, args[1:], stdout, stderr)
	case "profile":
		return profileCmd(ctx, args[1:], stdout, stderr)
	case "drift":
		return driftCmd(ctx, args[1:], stdout, stderr)
	case "bench":
		return benchCmd(ctx, args[1:], stdout, stderr)
	case "migration":
		return migrationCmd(ctx, args[1:], stdout, stderr)
	case "bench-noop": // the bench's floor server, started by bench; not in the usage text
		return benchNoopCmd(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "sidecar: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// isHelp reports whether a command-line word asks for help.
func isHelp(arg string) bool {
	switch arg {
	case "help", "-h", "-help", "--help":
		return true
	}
	return false
}

// flagExit is the exit code for an error of a FlagSet's Parse (ContinueOnError), which has
// already printed it and the flags: 0 for -h or -help, an explicit request for them, else 2.
func flagExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// subcommand runs the command of group ("sidecar GROUP COMMAND ...") that args name, with the
// arguments after it: help prints usage (exit 0), none or an unknown one prints it to stderr
// (exit 2).
func subcommand(group, usage string, args []string, stdout, stderr io.Writer, cmds map[string]func([]string) int) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if run, ok := cmds[args[0]]; ok {
		return run(args[1:])
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "sidecar %s: unknown command %q\n\n%s", group, args[0], usage)
	return 2
}
