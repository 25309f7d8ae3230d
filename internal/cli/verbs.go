package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/spry-dev/spry/internal/node"
)

func statusCmd() *cobra.Command {
	var admin, output string
	var cl clusterStatusFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a running node's apps, functions, instances and pool use (--cluster: the cluster's)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			if cl.on {
				return clusterStatus(ctx, cmd.OutOrStdout(), cl, output)
			}
			s, err := fetchStatus(ctx, admin)
			if err != nil {
				return err
			}
			switch output {
			case "json":
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			case "table":
				printStatus(cmd.OutOrStdout(), s)
				return nil
			}
			return exitError{2, fmt.Sprintf("-o %q: want table or json", output)}
		},
	}
	cmd.Flags().StringVar(&admin, "admin", DefaultAdmin, "the node's admin API address")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cl.flags(cmd.Flags())
	return cmd
}

func printStatus(out io.Writer, s *node.Status) {
	fmt.Fprintf(out, "node  pid %d  http %s  admin %s  up %s\n", s.Node.PID, s.Node.Listen, s.Node.Admin,
		(time.Duration(s.Node.Uptime) * time.Second).String())
	for _, a := range s.Apps {
		fmt.Fprintf(out, "\napp %s  transport %s  uid %d\n", a.Name, a.Transport, a.UID)
		fmt.Fprintf(out, "  pool      %d/%d buffers free, %s each (%s)\n", a.Pool.Free, a.Pool.Buffers,
			size(uint64(a.Pool.BufferSize)), size(uint64(a.Pool.Bytes)))
		r := a.Requests
		fmt.Fprintf(out, "  requests  %d in flight (limit %d), %d admitted, %d answered, %d failed, %d timed out, %d rejected\n",
			r.Inflight, r.Limit, r.Admitted, r.Answered, r.Failed, r.Timeouts, r.Rejected)
		fmt.Fprintln(out)
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  FUNCTION\tKIND\tINSTANCE\tPID\tSTATE\tINFLIGHT\tQUEUE\tSERVED\t4XX\t5XX\tRESTARTS\tMEMORY / LIMIT, CPU LIMIT (THROTTLED)")
		for _, f := range a.Functions {
			shown := 0
			for _, in := range f.Instances {
				if in.State == "stopped" && in.PID == 0 {
					continue // a slot the function may scale into
				}
				name, kind := f.Name, f.Kind+" "+f.Source
				if shown > 0 {
					name, kind = "", ""
				}
				shown++
				fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", name, kind, in.ID, in.PID, in.State,
					in.Inflight, in.Queue, in.Served, in.ClientErrors, in.Errors, in.Restarts, usage(f.Limits, in))
			}
		}
		tw.Flush()
		fmt.Fprintln(out)
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  CHAIN\tROUTE\tMETHODS\tTIMEOUT\tSTEPS")
		for _, c := range a.Chains {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", c.Name, c.Route, strings.Join(c.Methods, ","), c.Timeout, strings.Join(c.Steps, " → "))
		}
		tw.Flush()
	}
}

// usage prints an instance's memory use against its function's limits and
// how long its CPU limit held it back; "-" without limits.
func usage(l *node.LimitsStatus, in node.InstanceStatus) string {
	if l == nil {
		return "-"
	}
	mem := "no limit"
	if l.MemoryBytes > 0 {
		mem = size(in.MemoryBytes) + " / " + size(l.MemoryBytes)
	}
	cpu := "no cpu limit"
	if l.CPU > 0 {
		cpu = fmt.Sprintf("%g cpu (%s)", l.CPU, (time.Duration(in.ThrottledMillis) * time.Millisecond).String())
	}
	return mem + ", " + cpu
}

// size prints a byte count in binary units.
func size(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%.4gMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.4gKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

func invokeCmd() *cobra.Command {
	var (
		admin, data, method, ctype string
		headers                    []string
		include, async, insecure   bool
		key, callback              string
		timeout                    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "invoke ROUTE",
		Short: "Send a request to a chain of a running node and print the response",
		Example: `  spry invoke /hello -d 'spry'
  spry invoke /hello -d @input.txt
  echo spry | spry invoke /hello -d @-
  spry invoke /hello -X GET -i
  spry invoke /hello -d 'spry' --async          # 202: prints the activation id
  spry invoke /report --async --idempotency-key nightly-2024-05-01 --callback http://127.0.0.1:9000/done`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			route := args[0]
			if !strings.HasPrefix(route, "/") {
				route = "/" + route
			}
			var body io.Reader
			if cmd.Flags().Changed("data") {
				b, err := readData(data, cmd.InOrStdin())
				if err != nil {
					return exitError{2, err.Error()}
				}
				body = bytes.NewReader(b)
				if method == "" {
					method = "POST"
				}
			}
			if method == "" {
				method = "GET"
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			s, err := fetchStatus(ctx, admin)
			if err != nil {
				return err
			}
			scheme, client := "http://", http.DefaultClient
			if s.Node.TLS {
				scheme = "https://"
				client = &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true,
					TLSClientConfig: &tls.Config{InsecureSkipVerify: insecure}}}
			}
			req, err := http.NewRequestWithContext(ctx, method, scheme+dialable(s.Node.Listen)+route, body)
			if err != nil {
				return exitError{2, err.Error()}
			}
			if ctype != "" {
				req.Header.Set("Content-Type", ctype)
			}
			if async {
				req.Header.Set("Prefer", "respond-async")
			}
			if key != "" {
				req.Header.Set("Idempotency-Key", key)
			}
			if callback != "" {
				req.Header.Set("X-Callback-Url", callback)
			}
			for _, h := range headers {
				k, v, ok := strings.Cut(h, ":")
				if !ok {
					return exitError{2, fmt.Sprintf("-H %q: want 'Name: value'", h)}
				}
				req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			out := cmd.OutOrStdout()
			if async && resp.StatusCode == http.StatusAccepted && !include {
				var a struct {
					ID        string
					Duplicate bool
				}
				if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
					return fmt.Errorf("202 without an activation id: %w", err)
				}
				fmt.Fprintln(out, a.ID)
				if a.Duplicate {
					fmt.Fprintln(cmd.ErrOrStderr(), "spry: an earlier invocation with this idempotency key made it")
				}
				return nil
			}
			if include {
				fmt.Fprintf(out, "%s %s\n", resp.Proto, resp.Status)
				resp.Header.Write(out)
				fmt.Fprintln(out)
			}
			if _, err := io.Copy(out, resp.Body); err != nil {
				return err
			}
			if resp.StatusCode >= 400 {
				return exitError{1, "HTTP " + resp.Status}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&admin, "admin", DefaultAdmin, "the node's admin API address")
	f.StringVarP(&data, "data", "d", "", "request body: text, @FILE, or @- for stdin (makes the method POST)")
	f.StringVarP(&method, "request", "X", "", "HTTP method (default GET, or POST with -d)")
	f.StringVar(&ctype, "content-type", "", "Content-Type of the body")
	f.StringArrayVarP(&headers, "header", "H", nil, "extra request header, 'Name: value' (repeatable)")
	f.BoolVarP(&include, "include", "i", false, "print the response status and headers")
	f.BoolVar(&async, "async", false, "invoke asynchronously (Prefer: respond-async): print the activation id once it is stored")
	f.StringVar(&key, "idempotency-key", "", "with --async: the same key returns the same activation (Idempotency-Key)")
	f.StringVar(&callback, "callback", "", "with --async: POST the result here when done (X-Callback-Url)")
	f.BoolVarP(&insecure, "insecure", "k", false, "with a TLS gateway: do not verify its certificate (a self-signed one)")
	f.DurationVar(&timeout, "timeout", time.Minute, "give up after this long")
	return cmd
}

func readData(d string, stdin io.Reader) ([]byte, error) {
	switch {
	case d == "@-":
		return io.ReadAll(stdin)
	case strings.HasPrefix(d, "@"):
		return os.ReadFile(d[1:])
	}
	return []byte(d), nil
}

// dialable turns a listen address into one to connect to: an unspecified
// host (":8080", "0.0.0.0:8080", "[::]:8080") means this machine.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
