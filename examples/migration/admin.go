package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"time"

	"github.com/novacron/sidecar/proxy/admin"
	"github.com/novacron/sidecar/proxy/migrate"
)

// adminClient reads the sidecar's admin API: itself (GET /admin/migrations) and through the real
// CLI (sidecar migration status). Its methods may be called concurrently.
type adminClient struct {
	addr, token, tokenFile string
	sidecar                string // the binary, for its migration subcommand
	http                   *http.Client
}

// migrations returns every migration's status.
func (a *adminClient) migrations(ctx context.Context) ([]migrate.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.addr+"/admin/migrations", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET /admin/migrations: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("GET /admin/migrations: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /admin/migrations: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var list admin.List
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("GET /admin/migrations: %w", err)
	}
	return list.Migrations, nil
}

// migration returns the status of the migration name, or false when the sidecar has none of
// that name.
func (a *adminClient) migration(ctx context.Context, name string) (migrate.Status, bool, error) {
	all, err := a.migrations(ctx)
	for _, st := range all {
		if st.Name == name {
			return st, true, nil
		}
	}
	return migrate.Status{}, false, err
}

// status runs sidecar migration status (with args, such as a migration's name) and returns what
// it printed.
func (a *adminClient) status(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.sidecar, append([]string{"migration", "status", "-admin", a.addr, "-token-file", a.tokenFile}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
	}
	return string(out), nil
}
