package config

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// expand replaces ${NAME} in s with NAME's value in the node's environment,
// ${NAME:-default} with default when NAME is unset or empty, and $$ with
// $. Any other $ stays as it is. It returns why it cannot, naming the
// variable, when NAME is unset and has no default.
func expand(s string, getenv func(string) (string, bool)) (string, string) {
	if !strings.Contains(s, "$") {
		return s, ""
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '{':
		default:
			b.WriteByte(c)
			continue
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", fmt.Sprintf("%q: ${ without a closing }", s)
		}
		ref := s[i+2 : i+end]
		name, def, hasDef := strings.Cut(ref, ":-")
		if !envName.MatchString(name) {
			return "", fmt.Sprintf("${%s}: not a variable name (write $${ for a literal ${)", ref)
		}
		v, ok := getenv(name)
		switch {
		case ok && v != "":
		case hasDef:
			v = def
		case !ok:
			return "", fmt.Sprintf("${%s} is not set in the node's environment (give a default: ${%s:-value})", name, name)
		}
		b.WriteString(v)
		i += end
	}
	return b.String(), ""
}

// readEnvFile reads an env file: NAME=value lines, blank lines and # comments
// skipped, an optional "export " before the name, and the value taken as
// written, or unquoted when it is in "…" (with \n, \" and \\ escapes) or
// '…'. Variables are not expanded in it. It returns NAME=value pairs, or
// the first line that is wrong.
func readEnvFile(path string) ([]string, string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Sprintf("%s: %s", path, reason(err))
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' {
			continue
		}
		l = strings.TrimPrefix(l, "export ")
		k, v, ok := strings.Cut(l, "=")
		k = strings.TrimSpace(k)
		if !ok || !envName.MatchString(k) {
			return nil, fmt.Sprintf("%s:%d: want NAME=value, got %q", path, line, l)
		}
		if strings.HasPrefix(k, "SPRY_") {
			return nil, fmt.Sprintf("%s:%d: %s: SPRY_ variables are reserved for spry", path, line, k)
		}
		v = strings.TrimSpace(v)
		switch {
		case len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"':
			u, err := strconv.Unquote(v)
			if err != nil {
				return nil, fmt.Sprintf("%s:%d: %s: malformed quoted value", path, line, k)
			}
			v = u
		case len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'':
			v = v[1 : len(v)-1]
		}
		if strings.IndexByte(v, 0) >= 0 {
			return nil, fmt.Sprintf("%s:%d: %s: the value contains a NUL byte", path, line, k)
		}
		out = append(out, k+"="+v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Sprintf("%s: %v", path, err)
	}
	return out, ""
}

// setEnv sets kv ("NAME=value") in env, replacing an earlier NAME.
func setEnv(env []string, kv string) []string {
	name, _, _ := strings.Cut(kv, "=")
	for i, e := range env {
		if n, _, _ := strings.Cut(e, "="); n == name {
			env[i] = kv
			return env
		}
	}
	return append(env, kv)
}

// secretName is what a secret may be called: its file name under the
// instance's secrets directory.
var secretName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// MaxSecret bounds one secret's size.
const MaxSecret = 1 << 20

func (s *appSpec) validateSecrets(a *App, o Options, ps *problems) {
	for _, sp := range s.secrets.v {
		path := join("secrets", sp.name)
		if len(sp.name) > maxName || !secretName.MatchString(sp.name) {
			ps.add(sp.line, path, "%s is not a valid secret name: want letters, digits, '.', '-' and '_' (not a '.' first), at most %d characters",
				strconv.Quote(sp.name), maxName)
			continue
		}
		sec := Secret{Name: sp.name}
		switch {
		case sp.file.line != 0 && sp.value.line != 0:
			ps.add(sp.line, path, "want file: or value:, not both")
			continue
		case sp.file.ok():
			p, why := expand(sp.file.v, o.getenv)
			if why != "" {
				ps.add(sp.file.line, path+".file", "%s", why)
				continue
			}
			p, err := resolve(p, s.dir)
			if err == nil {
				var fi os.FileInfo
				if fi, err = os.Stat(p); err == nil && fi.Size() > MaxSecret {
					ps.add(sp.file.line, path+".file", "%s: larger than %s", p, formatSize(MaxSecret))
					continue
				}
				sec.Value, err = os.ReadFile(p)
			}
			if err != nil {
				ps.add(sp.file.line, path+".file", "%s: %s", p, reason(err))
				continue
			}
			sec.Source = p
		case sp.value.ok():
			v, why := expand(sp.value.v, o.getenv)
			if why != "" {
				ps.add(sp.value.line, path+".value", "%s", why)
				continue
			}
			sec.Value, sec.Source = []byte(v), "value"
		case sp.file.line == 0 && sp.value.line == 0:
			ps.add(sp.line, path, "want file: (a file the node reads) or value:")
			continue
		default:
			continue // reported by the decoder
		}
		a.Secrets = append(a.Secrets, sec)
	}
}
