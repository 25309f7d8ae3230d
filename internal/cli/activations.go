package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/spry-dev/spry/internal/activation"
	"github.com/spry-dev/spry/internal/trigger"
)

// adminCall sends a request to the node's admin API and returns the
// response; a status of 400 or more becomes an error with the node's
// message.
func adminCall(ctx context.Context, admin, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+admin+path, body)
	if err != nil {
		return nil, err
	}
	if tok := os.Getenv(EnvAdminToken); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("no spry node answers at %s (is `spry up` running? --admin sets the address): %w", admin, err)
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, exitError{1, adminError(resp.Status, b)}
	}
	return resp, nil
}

// adminError is the message of an admin API error answer: the node's
// {"error": ...}, else the status and the body.
func adminError(status string, body []byte) string {
	var e struct{ Error string }
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	return status + ": " + strings.TrimSpace(string(body))
}

func adminJSON(ctx context.Context, admin, method, path string, body io.Reader, v any) error {
	resp, err := adminCall(ctx, admin, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func activationsCmd() *cobra.Command {
	var admin string
	cmd := &cobra.Command{
		Use:   "activations",
		Short: "List, show and re-drive a node's activation records (async invocations, trigger firings, recorded requests)",
		Example: `  spry activations list --state dead
  spry activations get 18ec8810cc3ee615a7a82c5533d1ab10
  spry activations result 18ec8810cc3ee615a7a82c5533d1ab10 > out.json
  spry activations redrive --state dead --chain report`,
	}
	cmd.PersistentFlags().StringVar(&admin, "admin", DefaultAdmin, "the node's admin API address")

	var (
		app, chain, state, since, until, before, output string
		limit                                           int
		all                                             bool
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List activations, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return exitError{2, fmt.Sprintf("-o %q: want table or json", output)}
			}
			q := url.Values{}
			for k, v := range map[string]string{"app": app, "chain": chain, "state": state, "since": since, "until": until, "before": before} {
				if v != "" {
					q.Set(k, v)
				}
			}
			q.Set("limit", strconv.Itoa(min(limit, activation.MaxList)))
			var recs []activation.Record
			for {
				var page struct {
					Activations []activation.Record
					Next        string
				}
				if err := adminJSON(cmd.Context(), admin, "GET", "/v1/activations?"+q.Encode(), nil, &page); err != nil {
					return err
				}
				recs = append(recs, page.Activations...)
				if !all || page.Next == "" {
					if output == "table" && page.Next != "" {
						defer fmt.Fprintf(cmd.ErrOrStderr(), "more: --before %s (or --all)\n", page.Next)
					}
					break
				}
				q.Set("before", page.Next)
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), recs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tAPP\tCHAIN\tCAUSE\tSTATE\tSTATUS\tATTEMPTS\tACCEPTED\tDURATION")
			for _, r := range recs {
				cause := r.Cause.Kind
				if r.Cause.Trigger != "" {
					cause += ":" + r.Cause.Trigger
				}
				dur := "-"
				if d := r.Duration(); d > 0 {
					dur = d.Round(time.Microsecond).String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", r.ID, r.App, r.Chain, cause, r.State, r.Status, r.Attempts,
					r.Accepted.Local().Format("2006-01-02 15:04:05.000"), dur)
			}
			return tw.Flush()
		},
	}
	lf := list.Flags()
	lf.StringVar(&app, "app", "", "only this app's")
	lf.StringVar(&chain, "chain", "", "only this chain's")
	lf.StringVar(&state, "state", "", "only in this state: queued, running, succeeded, failed, dead")
	lf.StringVar(&since, "since", "", "accepted at or after: a time (RFC 3339) or a duration back from now (1h)")
	lf.StringVar(&until, "until", "", "accepted before: a time (RFC 3339) or a duration back from now")
	lf.StringVar(&before, "before", "", "the page after this id (from a previous list)")
	lf.IntVar(&limit, "limit", 50, "at most this many (a page)")
	lf.BoolVar(&all, "all", false, "every page")
	lf.StringVarP(&output, "output", "o", "table", "table or json")

	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show one activation's record",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r activation.Record
			if err := adminJSON(cmd.Context(), admin, "GET", "/v1/activations/"+url.PathEscape(args[0]), nil, &r); err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), r)
		},
	}

	result := &cobra.Command{
		Use:   "result ID",
		Short: "Print an activation's result (the chain's output), as kept in its record",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := adminCall(cmd.Context(), admin, "GET", "/v1/activations/"+url.PathEscape(args[0])+"/result", nil)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if _, err := io.Copy(cmd.OutOrStdout(), resp.Body); err != nil {
				return err
			}
			if resp.Header.Get("X-Spry-Result-Truncated") == "true" {
				fmt.Fprintf(cmd.ErrOrStderr(), "spry: the result was %s bytes; the record keeps the first ones (activations.result in spry.yaml)\n",
					resp.Header.Get("X-Spry-Result-Size"))
			}
			if st, _ := strconv.Atoi(resp.Header.Get("X-Spry-Status")); st >= 400 {
				return exitError{1, fmt.Sprintf("the activation %s with status %d", resp.Header.Get("X-Spry-State"), st)}
			}
			return nil
		},
	}

	var rApp, rChain, rState string
	redrive := &cobra.Command{
		Use:   "redrive [ID]...",
		Short: "Run dead (or failed) activations again, from a fresh count of attempts",
		Long: `redrive runs the named activations again, or, without ids, every activation in
--state (dead by default) of --chain / --app. Use it once the cause is fixed.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			body, _ := json.Marshal(map[string]any{"ids": args, "app": rApp, "chain": rChain, "state": rState})
			var out struct {
				Queued  []string
				Skipped map[string]string
			}
			if err := adminJSON(cmd.Context(), admin, "POST", "/v1/activations/redrive", bytes.NewReader(body), &out); err != nil {
				return err
			}
			for _, id := range out.Queued {
				fmt.Fprintf(cmd.OutOrStdout(), "%s queued\n", id)
			}
			for id, why := range out.Skipped {
				fmt.Fprintf(cmd.OutOrStdout(), "%s skipped: %s\n", id, why)
			}
			if len(out.Queued) == 0 && len(out.Skipped) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "nothing to redrive")
			}
			return nil
		},
	}
	redrive.Flags().StringVar(&rApp, "app", "", "without ids: only this app's")
	redrive.Flags().StringVar(&rChain, "chain", "", "without ids: only this chain's")
	redrive.Flags().StringVar(&rState, "state", "dead", "without ids: dead or failed")

	cmd.AddCommand(list, get, result, redrive)
	return cmd
}

func triggersCmd() *cobra.Command {
	var admin, output string
	cmd := &cobra.Command{
		Use:   "triggers",
		Short: "Show a node's triggers: each one's source, last firing and counts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Triggers []trigger.Status
				MQTT     string
			}
			if err := adminJSON(cmd.Context(), admin, "GET", "/v1/triggers", nil, &out); err != nil {
				return err
			}
			switch output {
			case "json":
				return printJSON(cmd.OutOrStdout(), out)
			case "table":
			default:
				return exitError{2, fmt.Sprintf("-o %q: want table or json", output)}
			}
			w := cmd.OutOrStdout()
			if out.MQTT != "" {
				fmt.Fprintf(w, "mqtt broker on %s\n\n", out.MQTT)
			}
			if len(out.Triggers) == 0 {
				fmt.Fprintln(w, "no triggers (see triggers: in spry.yaml)")
				return nil
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "APP\tTRIGGER\tCHAIN\tSOURCE\tLAST FIRE\tNEXT\tFIRED\tACCEPTED\tREJECTED\tSKIPPED")
			for _, t := range out.Triggers {
				last, next := "-", "-"
				if !t.LastFire.IsZero() {
					last = time.Since(t.LastFire).Round(time.Second).String() + " ago"
				}
				if !t.NextFire.IsZero() {
					next = "in " + time.Until(t.NextFire).Round(time.Second).String()
				}
				src := t.Source
				if t.Connected != nil && !*t.Connected {
					src += " [not connected]"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\n", t.App, t.Name, t.Chain, src, last, next,
					t.Fired, t.Accepted, t.Rejected, t.Skipped)
			}
			tw.Flush()
			for _, t := range out.Triggers {
				if t.LastError != "" {
					fmt.Fprintf(w, "\n%s/%s last error: %s\n", t.App, t.Name, t.LastError)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&admin, "admin", DefaultAdmin, "the node's admin API address")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}
