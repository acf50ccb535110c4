// Command strategylists writes the lists of isolation strategies held
// outside Go (the OpenAPI enum, the Helm schema enum and values comment)
// from app.Strategies; with -check it changes nothing and exits 1 when a
// file is stale. `go generate ./app` runs it; so does `make generate`, and
// `make generate/check` runs it with -check.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/bulkheadhq/bulkhead/app"
	"github.com/bulkheadhq/bulkhead/internal/strategylists"
)

func main() { os.Exit(run()) }

func run() int {
	check := flag.Bool("check", false, "change nothing; exit 1 when a file is stale")
	flag.Parse()
	root, err := strategylists.Root(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, "strategylists:", err)
		return 1
	}
	if *check {
		stale, err := strategylists.Stale(root, app.StrategyNames())
		if err != nil {
			fmt.Fprintln(os.Stderr, "strategylists:", err)
			return 1
		}
		for _, p := range stale {
			fmt.Fprintf(os.Stderr, "%s does not list the strategies of app.Strategies: run make generate and commit it\n", p)
		}
		if len(stale) > 0 {
			return 1
		}
		return 0
	}
	written, err := strategylists.Write(root, app.StrategyNames())
	if err != nil {
		fmt.Fprintln(os.Stderr, "strategylists:", err)
		return 1
	}
	for _, p := range written {
		fmt.Println("strategylists: wrote", p)
	}
	return 0
}
