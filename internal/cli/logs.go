package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// logsCmd is `spry logs FUNCTION`: what the function's instances printed,
// from the running node (GET /v1/logs).
func logsCmd() *cobra.Command {
	var (
		admin, app string
		follow     bool
		tail       int
		times      bool
	)
	cmd := &cobra.Command{
		Use:   "logs FUNCTION",
		Short: "Print a function's output (stdout and stderr of its instances); -f follows it",
		Example: `  spry logs greet              # the last 100 lines
  spry logs greet -f           # and new ones as they come, until ^C
  spry logs greet --tail -1    # all the node kept (the last 2000 lines)`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			q := url.Values{"function": {args[0]}, "tail": {strconv.Itoa(tail)}}
			if app != "" {
				q.Set("app", app)
			}
			if follow {
				q.Set("follow", "1")
			}
			return streamLogs(ctx, admin, q, times, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&admin, "admin", DefaultAdmin, "the node's admin API address")
	f.StringVar(&app, "app", "", "the app, when several have a function of that name")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new lines until interrupted")
	f.IntVar(&tail, "tail", 100, "how many of the last lines to print first (-1: all)")
	f.BoolVar(&times, "timestamps", false, "print each line's time")
	return cmd
}

func streamLogs(ctx context.Context, admin string, q url.Values, times bool, w io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	req, err := adminRequest(ctx, "GET", admin, "/v1/logs?"+q.Encode())
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("no spry node answers at %s (is `spry up` running? --admin sets the address): %w", admin, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		var e struct{ Error string }
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return exitError{1, e.Error}
		}
		return fmt.Errorf("admin API at %s: %s: %s", admin, resp.Status, strings.TrimSpace(string(b)))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	bw := bufio.NewWriter(w)
	for sc.Scan() {
		var l struct {
			Time     string `json:"time"`
			Instance uint16 `json:"instance"`
			Text     string `json:"text"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		if times {
			fmt.Fprintf(bw, "%s ", l.Time)
		}
		fmt.Fprintf(bw, "[#%d] %s\n", l.Instance, l.Text)
		if len(sc.Bytes()) > 0 && resp.Body != nil {
			bw.Flush()
		}
	}
	bw.Flush()
	return nil
}
