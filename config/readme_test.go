package config_test

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/novacron/sidecar/config"
)

// TestReadmeConfigs: every YAML block of the README is a config the sidecar takes as written
// (parsed, defaulted and validated; the files it names are not read).
func TestReadmeConfigs(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	blocks := 0
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```yaml" {
			continue
		}
		start := i + 1
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
		}
		blocks++
		text := strings.Join(lines[start:i], "\n") + "\n"
		if _, err := config.Parse("README.md block at line "+strconv.Itoa(start), []byte(text)); err != nil {
			t.Errorf("the YAML block at README.md:%d: %v", start, err)
		}
	}
	if blocks < 2 {
		t.Errorf("found %d YAML blocks in README.md; want the remote backend's and the migration's", blocks)
	}
}
