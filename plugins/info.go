package plugins

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// Proto converts the Info for the API.
func (in Info) Proto() *troupev1.PluginInfo {
	p := &troupev1.PluginInfo{
		Name:      in.Name,
		Version:   in.Version,
		Hooks:     in.Hooks,
		Order:     int32(in.Order),
		Trusted:   in.Trusted,
		State:     in.State.String(),
		LastError: in.LastError,
	}
	if in.Kind != 0 {
		p.Kind = in.Kind.String()
	}
	if !in.LastErrorAt.IsZero() {
		p.LastErrorUnixNano = in.LastErrorAt.UnixNano()
	}
	if !in.LoadedAt.IsZero() {
		p.LoadedUnixNano = in.LoadedAt.UnixNano()
	}
	return p
}

// WriteTable writes plugins as the table of `troupe plugins list`:
// NAME VERSION KIND HOOKS STATE LAST ERROR.
func WriteTable(w io.Writer, plugins []*troupev1.PluginInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tKIND\tORDER\tHOOKS\tSTATE\tLAST ERROR")
	for _, p := range plugins {
		last := p.GetLastError()
		if last != "" && p.GetLastErrorUnixNano() != 0 {
			last = time.Unix(0, p.GetLastErrorUnixNano()).UTC().Format(time.RFC3339) + " " + last
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", p.GetName(), orDash(p.GetVersion()), orDash(p.GetKind()),
			p.GetOrder(), orDash(p.GetHooks()), p.GetState(), orDash(oneLine(last)))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '\n' || c == '\t' || c == '\r' {
			b[i] = ' '
		}
	}
	return string(b)
}
