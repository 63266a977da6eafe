package main

import (
	"context"
	"flag"
	"fmt"
	"sort"
	"strings"
)

// runRejections lists the writes the server refused, with its reasons, and
// with --dismiss EVENT clears one the user has dealt with.
func runRejections(ctx context.Context, m *Main, args []string) error {
	var c clientFlags
	var dismiss string
	_, err := parseClient(m, "rejections", &c, args, func(fs *flag.FlagSet) {
		fs.StringVar(&dismiss, "dismiss", "", "clear the rejection of this event id (after dealing with it)")
	})
	if err != nil {
		return err
	}
	s, err := openClient(ctx, m, c, false)
	if err != nil {
		return err
	}
	defer s.Close()
	if dismiss != "" {
		if err := s.r.DismissRejection(ctx, dismiss); err != nil {
			return fmt.Errorf("rejections: dismiss %s: %w", dismiss, err)
		}
		if c.json {
			return printJSON(m.Stdout, struct {
				Dismissed string `json:"dismissed"`
			}{dismiss})
		}
		fmt.Fprintf(m.Stdout, "dismissed %s\n", dismiss)
		return nil
	}
	rs, err := s.r.Rejections(ctx)
	if err != nil {
		return fmt.Errorf("rejections: %w", err)
	}
	if c.json {
		return printJSON(m.Stdout, rs)
	}
	if len(rs) == 0 {
		fmt.Fprintln(m.Stdout, "no rejected writes")
		return nil
	}
	for _, r := range rs {
		fields := ""
		if len(r.Fields) > 0 {
			parts := make([]string, 0, len(r.Fields))
			for k, v := range r.Fields {
				parts = append(parts, fmt.Sprintf("%q:%s", k, v))
			}
			sort.Strings(parts)
			fields = " {" + strings.Join(parts, ",") + "}"
		}
		fmt.Fprintf(m.Stdout, "%s/%s: %s %s%s: %s: %s\n", r.Collection, r.Doc, r.Op, r.Event, fields, r.Outcome, r.Reason)
	}
	fmt.Fprintln(m.Stdout, "write again what you still want, then clear each with 'ebb rejections --dismiss EVENT'")
	return nil
}
