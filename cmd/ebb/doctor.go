package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"time"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/producer"
)

// runDoctor checks a client's local store and, with --reset, sets a damaged
// one aside so the next command starts a new device.
func runDoctor(ctx context.Context, m *Main, args []string) error {
	var c clientFlags
	var reset bool
	if _, err := parseClient(m, "doctor", &c, args, func(fs *flag.FlagSet) {
		fs.BoolVar(&reset, "reset", false, "move a damaged or missing store aside (nothing is deleted) so the next command starts a new device")
	}); err != nil {
		return err
	}
	path := filepath.Join(c.data, consumer.DBFile)
	d := producer.Diagnose(path)
	if c.json && (!reset || d.Problem == nil) {
		return printJSON(m.Stdout, struct {
			Path    string   `json:"path"`
			OK      bool     `json:"ok"`
			Problem string   `json:"problem,omitempty"`
			Pages   []string `json:"bad_pages,omitempty"`
			Client  string   `json:"client,omitempty"`
			Device  string   `json:"device,omitempty"`
			Pending int      `json:"pending"`
		}{d.Path, d.Problem == nil, errString(d.Problem), d.Pages, d.Client, d.Device, d.Pending})
	}
	if d.Problem == nil {
		fmt.Fprintf(m.Stdout, "%s: ok (client %s, device %s, %d unsent writes)\n", path, d.Client, d.Device, d.Pending)
		return nil
	}
	if !reset {
		fmt.Fprintf(m.Stdout, "%s: %v\n", path, d.Problem)
		for _, p := range d.Pages {
			fmt.Fprintf(m.Stdout, "  %s\n", p)
		}
		fmt.Fprintf(m.Stdout, "restore the file from a backup, or run 'ebb doctor --reset' to set it aside and start a new device (its unsent writes stay in the set-aside file)\n")
		return fmt.Errorf("doctor: the local store in %s needs attention", c.data)
	}
	dst, err := producer.SetAside(path, time.Now())
	if err != nil {
		return fmt.Errorf("doctor: %w", err)
	}
	if c.json {
		return printJSON(m.Stdout, struct {
			Path  string `json:"path"`
			Moved string `json:"moved_to"`
		}{path, dst})
	}
	fmt.Fprintf(m.Stdout, "moved %s to %s; the next command starts a new device (run 'ebb sync' to fetch the server's view)\n", path, dst)
	return nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
