package bench

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
)

// WriteTable prints rows as an aligned table: workload, server sync
// policy, the ebb figure, its baseline, the unit, ebb/baseline, the
// target and whether it is met.
func WriteTable(w io.Writer, rows []Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKLOAD\tSYNC\tEBB\tRAW\tUNIT\tRATIO\tTARGET\tMET")
	for _, r := range rows {
		sync := r.Sync
		if sync == "" {
			sync = "-"
		}
		met := "no"
		if r.Met {
			met = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t%s\n", r.Workload, sync, figure(r.Ebb), figure(r.Raw), r.Unit, r.Ratio, r.Target, met)
	}
	return tw.Flush()
}

// figure prints x with three significant digits, or as an integer when
// larger.
func figure(x float64) string {
	if x >= 1000 {
		return strconv.FormatFloat(x, 'f', 0, 64)
	}
	return strconv.FormatFloat(x, 'g', 3, 64)
}
