// Command check loads compose files the way `docker compose config` does (compose-go: schema
// validation, interpolation, normalisation) and prints the resolved project as YAML. No Docker
// engine is needed, so CI runs it on machines that have none (nox -s deploy).
//
//	go run . ../docker-compose.yml
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: check COMPOSE_FILE...")
		os.Exit(2)
	}
	opts, err := cli.NewProjectOptions(os.Args[1:], cli.WithOsEnv, cli.WithDotEnv)
	if err == nil {
		var out []byte
		project, loadErr := opts.LoadProject(context.Background())
		err = loadErr
		if err == nil {
			out, err = project.MarshalYAML()
		}
		if err == nil {
			_, err = os.Stdout.Write(out)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "compose check:", err)
		os.Exit(1)
	}
}
