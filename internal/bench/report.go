package bench

import (
	"fmt"
	"html"
	"html/template"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// WriteHTML writes one self-contained HTML page reporting results: for each,
// a header (scenario, parameters, start time, duration), the summary numbers
// and charts over time of throughput, latency and connections. The page
// needs nothing but a browser: no scripts, fonts or style sheets from
// elsewhere; the charts are inline SVG.
func WriteHTML(w io.Writer, results []Result) error {
	p := htmlPage{Title: "Herald bench report"}
	if len(results) == 1 {
		p.Title = "Herald bench: " + results[0].Scenario
	}
	for i, r := range results {
		p.Sections = append(p.Sections, newSection(i, r))
	}
	return pageTmpl.Execute(w, p)
}

// WriteText writes r as a plain summary for a terminal: one aligned line per
// figure, durations, counts and sizes in human units.
func WriteText(w io.Writer, r Result) error {
	var lines [][2]string // label, value; a zero pair is a blank line
	line := func(label, value string) {
		lines = append(lines, [2]string{label, value})
	}
	line("Scenario", r.Scenario)
	if len(r.Params) > 0 {
		line("Params", paramsString(r.Params))
	}
	line("Started", fmtTime(r.Started))
	line("Duration", fmtDuration(r.Duration))
	line("", "")

	conns := fmtCount(r.Connections)
	var extra []string
	if r.ConnectRate > 0 {
		extra = append(extra, "ramp "+fmtRate(r.ConnectRate))
	}
	if n := sumCounts(r.ConnectFail); n > 0 {
		extra = append(extra, fmtCount(n)+" failed: "+countsString(r.ConnectFail))
	}
	if len(extra) > 0 {
		conns += "  (" + strings.Join(extra, ", ") + ")"
	}
	line("Connections", conns)
	line("Sent", fmtCount(r.Sent))
	delivered := fmtCount(r.Delivered)
	if r.Expected > 0 {
		delivered += " of " + fmtCount(r.Expected) + " expected"
	}
	line("Delivered", delivered)
	line("Missing", fmtCount(r.Missing)+fmtPercentOf(r.Missing, r.Expected))
	line("Duplicates", fmtCount(r.Duplicates))
	line("Throughput", fmtRate(r.Throughput))
	q := r.Latency
	if q.Count > 0 {
		line("Latency", fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (mean %s, min %s, n=%s)",
			fmtDuration(q.P50), fmtDuration(q.P90), fmtDuration(q.P99), fmtDuration(q.P999),
			fmtDuration(q.Max), fmtDuration(q.Mean), fmtDuration(q.Min), fmtCount(q.Count)))
	} else {
		line("Latency", "none measured")
	}
	errs := fmtCount(sumCounts(r.Errors))
	if len(r.Errors) > 0 {
		errs += "  (" + countsString(r.Errors) + ")"
	}
	line("Errors", errs)
	if r.ServerCPU > 0 || r.ServerCPUPerOp > 0 {
		line("Server CPU", fmtDuration(r.ServerCPU)+"  ("+fmtDuration(r.ServerCPUPerOp)+"/op)")
	}
	if r.ServerRSSBefore > 0 || r.ServerRSSAfter > 0 || r.ServerRSSPerConn > 0 {
		line("Server RSS", fmtBytes(float64(r.ServerRSSBefore))+" → "+fmtBytes(float64(r.ServerRSSAfter))+
			"  ("+fmtBytes(r.ServerRSSPerConn)+"/conn)")
	}
	if r.RecoveryTime > 0 {
		line("Recovery", fmtDuration(r.RecoveryTime))
	}
	if r.InboxExpected > 0 || r.InboxUnconfirmed > 0 {
		line("Inbox", inboxSummary(r))
	}
	if r.CatchUpTime > 0 {
		line("Catch-up", fmtDuration(r.CatchUpTime))
	}
	if topicShown(r) {
		line("Topic", topicSummary(r))
	}
	for i, n := range r.Notes {
		label := ""
		if i == 0 {
			label = "Notes"
		}
		line(label, n)
	}

	width := 0
	for _, l := range lines {
		width = max(width, len(l[0]))
	}
	var b strings.Builder
	for _, l := range lines {
		if l[1] == "" {
			b.WriteString(strings.TrimRight(l[0], " ") + "\n")
			continue
		}
		b.WriteString(l[0] + strings.Repeat(" ", width+2-len(l[0])) + l[1] + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// inboxSummary is the text line of a storm's inbox messages.
func inboxSummary(r Result) string {
	s := fmt.Sprintf("%s of %s accepted delivered, %s missing, %s duplicates, %s redelivered before their ACK was processed (allowed)",
		fmtCount(r.InboxDelivered), fmtCount(r.InboxExpected), fmtCount(r.InboxMissing),
		fmtCount(r.InboxDuplicates), fmtCount(r.InboxRedelivered))
	if r.InboxUnconfirmed > 0 {
		s += ", " + fmtCount(r.InboxUnconfirmed) + " received though not confirmed by the API"
	}
	return s
}

// topicShown reports whether r has storm topic-recovery figures.
func topicShown(r Result) bool {
	return r.TopicExpected > 0 || r.TopicRecovered > 0 || r.TopicUnrecovered > 0 || r.TopicUnconfirmed > 0
}

// topicSummary is the text line of a storm's topic recovery.
func topicSummary(r Result) string {
	s := fmt.Sprintf("%s of %s subscriptions recovered, %s not; missed messages: %s of %s accepted delivered, %s missing, %s duplicates, %s repeats dropped by seq (allowed)",
		fmtCount(r.TopicRecovered), fmtCount(r.TopicRecovered+r.TopicUnrecovered), fmtCount(r.TopicUnrecovered),
		fmtCount(r.TopicDelivered), fmtCount(r.TopicExpected), fmtCount(r.TopicMissing),
		fmtCount(r.TopicDuplicates), fmtCount(r.TopicRepeats))
	if r.TopicUnconfirmed > 0 {
		s += ", " + fmtCount(r.TopicUnconfirmed) + " received though not confirmed by the API"
	}
	return s
}

// MarkdownHeader returns the header and separator lines of the table whose
// rows MarkdownRow writes.
func MarkdownHeader() string {
	cols := []string{"Scenario", "Params", "Duration", "Connections", "Connect rate", "Sent", "Delivered",
		"Throughput", "p50", "p99", "p99.9", "Max", "Missing", "Duplicates", "Errors",
		"Server CPU/op", "Server RSS/conn"}
	return "| " + strings.Join(cols, " | ") + " |\n|" + strings.Repeat("---|", len(cols))
}

// MarkdownRow returns r as one row of a Markdown table for BENCHMARKS.md,
// with the columns of MarkdownHeader and no trailing newline.
func MarkdownRow(r Result) string {
	cell := func(s string) string {
		s = strings.ReplaceAll(s, "|", `\|`)
		return strings.Join(strings.Fields(s), " ")
	}
	orDash := func(ok bool, s string) string {
		if !ok {
			return "—"
		}
		return s
	}
	q := r.Latency
	cols := []string{
		cell(r.Scenario),
		cell(orDash(len(r.Params) > 0, "`"+paramsString(rowParams(r.Params))+"`")),
		fmtDuration(r.Duration),
		fmtCount(r.Connections),
		orDash(r.ConnectRate > 0, fmtRate(r.ConnectRate)),
		fmtCount(r.Sent),
		fmtCount(r.Delivered),
		fmtRate(r.Throughput),
		orDash(q.Count > 0, fmtDuration(q.P50)),
		orDash(q.Count > 0, fmtDuration(q.P99)),
		orDash(q.Count > 0, fmtDuration(q.P999)),
		orDash(q.Count > 0, fmtDuration(q.Max)),
		fmtCount(r.Missing),
		fmtCount(r.Duplicates),
		fmtCount(sumCounts(r.Errors)),
		orDash(r.ServerCPUPerOp > 0, fmtDuration(r.ServerCPUPerOp)),
		orDash(r.ServerRSSPerConn > 0, fmtBytes(r.ServerRSSPerConn)),
	}
	return "| " + strings.Join(cols, " | ") + " |"
}

// ---- formatting ----

// fmtDuration formats d with three significant figures: "850ns", "12.3µs",
// "1.23ms", "4.56s"; a minute or more is rounded to the second ("2m5s").
func fmtDuration(d time.Duration) string {
	if d < 0 {
		return "-" + fmtDuration(-d)
	}
	switch {
	case d == 0:
		return "0s"
	case d < time.Microsecond:
		return strconv.FormatInt(int64(d), 10) + "ns"
	case d < time.Millisecond:
		return fmtSig3(float64(d)/float64(time.Microsecond)) + "µs"
	case d < time.Second:
		return fmtSig3(float64(d)/float64(time.Millisecond)) + "ms"
	case d < time.Minute:
		return fmtSig3(float64(d)/float64(time.Second)) + "s"
	}
	return d.Round(time.Second).String()
}

// fmtSig3 formats v (>= 1) with three significant figures and no trailing
// zeros after the point.
func fmtSig3(v float64) string {
	prec := 0
	switch {
	case v < 10:
		prec = 2
	case v < 100:
		prec = 1
	}
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// fmtCount formats n with thousands separators: "19,000".
func fmtCount(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// fmtRate formats a per-second rate: "3,100/s", "12.5/s".
func fmtRate(f float64) string {
	if f != 0 && math.Abs(f) < 100 {
		return fmtSig3(f) + "/s"
	}
	return fmtCount(int64(math.Round(f))) + "/s"
}

// fmtBytes formats a size in binary units: "512 B", "2.73 KiB", "67.0 MiB".
func fmtBytes(b float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for math.Abs(b) >= 1024 && i < len(units)-1 {
		b /= 1024
		i++
	}
	if i == 0 {
		return strconv.FormatFloat(math.Round(b), 'f', -1, 64) + " B"
	}
	prec := 2
	switch {
	case math.Abs(b) >= 100:
		prec = 0
	case math.Abs(b) >= 10:
		prec = 1
	}
	return strconv.FormatFloat(b, 'f', prec, 64) + " " + units[i]
}

// fmtPercentOf formats n as a percentage of total, " (0.21%)", or "" if
// total is zero.
func fmtPercentOf(n, total int64) string {
	if total <= 0 || n == 0 {
		return ""
	}
	p := 100 * float64(n) / float64(total)
	prec := 2
	if p >= 10 {
		prec = 1
	}
	return " (" + strconv.FormatFloat(p, 'f', prec, 64) + "%)"
}

// fmtTime formats a start time, or "—" for the zero time.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.Format("2006-01-02 15:04:05 MST")
}

// rowParams drops from params what differs between runs of the same
// command (the server's address, with its ephemeral port).
func rowParams(params map[string]string) map[string]string {
	out := make(map[string]string, len(params))
	for k, v := range params {
		if k != "url" {
			out[k] = v
		}
	}
	return out
}

// paramsString formats parameters as sorted "key=value" pairs.
func paramsString(params map[string]string) string {
	var parts []string
	for _, kv := range sortedParams(params) {
		parts = append(parts, kv.K+"="+kv.V)
	}
	return strings.Join(parts, " ")
}

type keyValue struct{ K, V string }

func sortedParams(params map[string]string) []keyValue {
	kvs := make([]keyValue, 0, len(params))
	for k, v := range params {
		kvs = append(kvs, keyValue{k, v})
	}
	sort.Slice(kvs, func(i, j int) bool { return kvs[i].K < kvs[j].K })
	return kvs
}

// sortedCounts returns counts by kind, largest first.
func sortedCounts(m map[string]int64) []keyValue {
	type kc struct {
		k string
		n int64
	}
	s := make([]kc, 0, len(m))
	for k, n := range m {
		s = append(s, kc{k, n})
	}
	sort.Slice(s, func(i, j int) bool {
		if s[i].n != s[j].n {
			return s[i].n > s[j].n
		}
		return s[i].k < s[j].k
	})
	out := make([]keyValue, len(s))
	for i, e := range s {
		out[i] = keyValue{e.k, fmtCount(e.n)}
	}
	return out
}

func countsString(m map[string]int64) string {
	var parts []string
	for _, kv := range sortedCounts(m) {
		parts = append(parts, kv.K+" "+kv.V)
	}
	return strings.Join(parts, ", ")
}

func sumCounts(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// ---- HTML page ----

type htmlPage struct {
	Title    string
	Sections []htmlSection
}

type htmlSection struct {
	ID          string
	Scenario    string
	Started     string
	Duration    string
	Params      []keyValue
	Cards       []htmlCard
	Groups      []htmlGroup
	Errors      []keyValue
	ConnectFail []keyValue
	Missing     []string
	Notes       []string
	Charts      []htmlChart
	Summary     htmlSummary // the row of the overview table
}

type htmlCard struct {
	Label, Value, Sub, Class string
}

type htmlGroup struct {
	Title string
	Rows  []htmlRow
}

type htmlRow struct {
	Label, Value, Class string
}

type htmlChart struct {
	Title string
	SVG   template.HTML
}

type htmlSummary struct {
	Duration, Connections, Throughput, P50, P99, Missing, Errors string
}

func newSection(i int, r Result) htmlSection {
	q := r.Latency
	lat := func(d time.Duration) string {
		if q.Count == 0 {
			return "—"
		}
		return fmtDuration(d)
	}
	bad := func(n int64) string {
		if n > 0 {
			return "bad"
		}
		return ""
	}
	warn := func(n int64) string {
		if n > 0 {
			return "warn"
		}
		return ""
	}
	nErrs := sumCounts(r.Errors)
	s := htmlSection{
		ID:          "result-" + strconv.Itoa(i+1),
		Scenario:    r.Scenario,
		Started:     fmtTime(r.Started),
		Duration:    fmtDuration(r.Duration),
		Params:      sortedParams(r.Params),
		Errors:      sortedCounts(r.Errors),
		ConnectFail: sortedCounts(r.ConnectFail),
		Notes:       r.Notes,
		Summary: htmlSummary{
			Duration:    fmtDuration(r.Duration),
			Connections: fmtCount(r.Connections),
			Throughput:  fmtRate(r.Throughput),
			P50:         lat(q.P50),
			P99:         lat(q.P99),
			Missing:     fmtCount(r.Missing),
			Errors:      fmtCount(nErrs),
		},
	}
	if s.Scenario == "" {
		s.Scenario = "(unnamed scenario)"
	}

	s.Cards = []htmlCard{
		{Label: "Throughput", Value: fmtRate(r.Throughput), Sub: "deliveries per second"},
		{Label: "Latency p99", Value: lat(q.P99), Sub: "p50 " + lat(q.P50)},
		{Label: "Delivered", Value: fmtCount(r.Delivered), Sub: orEmpty(r.Expected > 0, "of "+fmtCount(r.Expected)+" expected")},
		{Label: "Missing", Value: fmtCount(r.Missing), Sub: strings.Trim(fmtPercentOf(r.Missing, r.Expected), " ()"), Class: bad(r.Missing)},
		{Label: "Connections", Value: fmtCount(r.Connections), Sub: orEmpty(r.ConnectRate > 0, fmtRate(r.ConnectRate)+" ramp")},
		{Label: "Errors", Value: fmtCount(nErrs), Class: bad(nErrs)},
	}

	conn := htmlGroup{Title: "Connections", Rows: []htmlRow{
		{Label: "Established", Value: fmtCount(r.Connections)},
		{Label: "Connect rate", Value: orDashS(r.ConnectRate > 0, fmtRate(r.ConnectRate))},
		{Label: "Connect failures", Value: fmtCount(sumCounts(r.ConnectFail)), Class: bad(sumCounts(r.ConnectFail))},
	}}
	msgs := htmlGroup{Title: "Messages", Rows: []htmlRow{
		{Label: "Sent", Value: fmtCount(r.Sent)},
		{Label: "Expected", Value: orDashS(r.Expected > 0, fmtCount(r.Expected))},
		{Label: "Delivered", Value: fmtCount(r.Delivered)},
		{Label: "Missing", Value: fmtCount(r.Missing) + fmtPercentOf(r.Missing, r.Expected), Class: bad(r.Missing)},
		{Label: "Duplicates", Value: fmtCount(r.Duplicates), Class: warn(r.Duplicates)},
		{Label: "Errors", Value: fmtCount(nErrs), Class: bad(nErrs)},
		{Label: "Throughput", Value: fmtRate(r.Throughput)},
	}}
	latency := htmlGroup{Title: "Latency", Rows: []htmlRow{
		{Label: "p50", Value: lat(q.P50)},
		{Label: "p90", Value: lat(q.P90)},
		{Label: "p99", Value: lat(q.P99)},
		{Label: "p99.9", Value: lat(q.P999)},
		{Label: "max", Value: lat(q.Max)},
		{Label: "mean", Value: lat(q.Mean)},
		{Label: "min", Value: lat(q.Min)},
		{Label: "samples", Value: fmtCount(q.Count)},
	}}
	server := htmlGroup{Title: "Server", Rows: []htmlRow{
		{Label: "CPU per op", Value: orDashS(r.ServerCPUPerOp > 0, fmtDuration(r.ServerCPUPerOp))},
		{Label: "CPU total", Value: orDashS(r.ServerCPU > 0, fmtDuration(r.ServerCPU))},
		{Label: "RSS per connection", Value: orDashS(r.ServerRSSPerConn > 0, fmtBytes(r.ServerRSSPerConn))},
		{Label: "RSS before", Value: orDashS(r.ServerRSSBefore > 0, fmtBytes(float64(r.ServerRSSBefore)))},
		{Label: "RSS after", Value: orDashS(r.ServerRSSAfter > 0, fmtBytes(float64(r.ServerRSSAfter)))},
	}}
	if r.RecoveryTime > 0 {
		server.Rows = append(server.Rows, htmlRow{Label: "Recovery time", Value: fmtDuration(r.RecoveryTime)})
	}
	if r.CatchUpTime > 0 {
		server.Rows = append(server.Rows, htmlRow{Label: "Inbox catch-up time", Value: fmtDuration(r.CatchUpTime)})
	}
	if r.InboxExpected > 0 || r.InboxUnconfirmed > 0 {
		msgs.Rows = append(msgs.Rows,
			htmlRow{Label: "Inbox delivered", Value: fmtCount(r.InboxDelivered) + " of " + fmtCount(r.InboxExpected)},
			htmlRow{Label: "Inbox missing", Value: fmtCount(r.InboxMissing), Class: bad(r.InboxMissing)},
			htmlRow{Label: "Inbox duplicates", Value: fmtCount(r.InboxDuplicates), Class: warn(r.InboxDuplicates)},
			htmlRow{Label: "Inbox redelivered before ACK", Value: fmtCount(r.InboxRedelivered)})
	}
	if topicShown(r) {
		msgs.Rows = append(msgs.Rows,
			htmlRow{Label: "Topic recovered", Value: fmtCount(r.TopicRecovered) + " of " + fmtCount(r.TopicRecovered+r.TopicUnrecovered) + " subscriptions"},
			htmlRow{Label: "Topic not recovered", Value: fmtCount(r.TopicUnrecovered), Class: bad(r.TopicUnrecovered)},
			htmlRow{Label: "Topic missed delivered", Value: fmtCount(r.TopicDelivered) + " of " + fmtCount(r.TopicExpected)},
			htmlRow{Label: "Topic missing", Value: fmtCount(r.TopicMissing), Class: bad(r.TopicMissing)},
			htmlRow{Label: "Topic duplicates", Value: fmtCount(r.TopicDuplicates), Class: warn(r.TopicDuplicates)},
			htmlRow{Label: "Topic repeats dropped by seq", Value: fmtCount(r.TopicRepeats)})
	}
	s.Groups = []htmlGroup{msgs, latency, conn, server}
	s.Charts = timelineCharts(r.Timeline)
	return s
}

func orEmpty(ok bool, s string) string {
	if !ok {
		return ""
	}
	return s
}

func orDashS(ok bool, s string) string {
	if !ok {
		return "—"
	}
	return s
}

var pageTmpl = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f6f7f9; color: #1f2328;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 0 0 2px; }
h3 { font-size: 14px; margin: 0 0 8px; color: #444c56; text-transform: uppercase; letter-spacing: .04em; }
.sub { color: #57606a; margin: 0 0 16px; }
section.result { background: #fff; border: 1px solid #d8dee4; border-radius: 8px; padding: 20px 22px; margin: 20px 0; }
.meta { color: #57606a; margin: 0 0 14px; }
.meta b { color: #1f2328; font-weight: 600; }
table { border-collapse: collapse; }
td, th { padding: 3px 10px 3px 0; text-align: left; vertical-align: top; }
th { font-weight: 600; color: #57606a; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; padding-left: 14px; padding-right: 0; }
.params { margin: 0 0 16px; font-size: 13px; }
.params td:first-child { color: #57606a; }
.params td:last-child { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(160px, 1fr)); gap: 10px; margin: 0 0 18px; }
.card { border: 1px solid #d8dee4; border-radius: 6px; padding: 10px 12px; background: #fbfcfd; }
.card .label { color: #57606a; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; white-space: nowrap; }
.card .csub { color: #57606a; font-size: 12px; min-height: 1.2em; }
.card.bad { border-color: #e5534b; background: #fff5f5; }
.card.bad .value { color: #c93c37; }
.groups { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 14px 24px; margin: 0 0 18px; }
.groups table { width: 100%; }
.groups td { border-bottom: 1px solid #eef1f4; }
.groups td { white-space: nowrap; }
td.bad { color: #c93c37; font-weight: 600; }
td.warn { color: #9a6700; font-weight: 600; }
.kinds { display: flex; flex-wrap: wrap; gap: 14px 40px; margin: 0 0 18px; }
ul.notes { margin: 0 0 18px; padding-left: 20px; }
.mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
figure { margin: 0 0 18px; }
figure svg { display: block; width: 100%; height: auto; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
svg .hover rect { fill: transparent; }
svg .hover rect:hover { fill: rgba(31, 35, 40, .07); }
.empty { color: #57606a; font-style: italic; }
.overview td, .overview th { border-bottom: 1px solid #eef1f4; padding-top: 4px; padding-bottom: 4px; }
a { color: #0969da; }
</style>
</head>
<body>
<main>
<h1>{{.Title}}</h1>
<p class="sub">Generated by <code>herald bench</code>. Latencies are publish-to-receive unless a scenario says otherwise.</p>
{{if gt (len .Sections) 1}}
<section class="result">
<h3>Overview</h3>
<table class="overview">
<tr><th>Scenario</th><th class="num">Duration</th><th class="num">Connections</th><th class="num">Throughput</th><th class="num">p50</th><th class="num">p99</th><th class="num">Missing</th><th class="num">Errors</th></tr>
{{range .Sections}}<tr><td><a href="#{{.ID}}">{{.Scenario}}</a></td><td class="num">{{.Summary.Duration}}</td><td class="num">{{.Summary.Connections}}</td><td class="num">{{.Summary.Throughput}}</td><td class="num">{{.Summary.P50}}</td><td class="num">{{.Summary.P99}}</td><td class="num">{{.Summary.Missing}}</td><td class="num">{{.Summary.Errors}}</td></tr>
{{end}}</table>
</section>
{{end}}
{{range .Sections}}
<section class="result" id="{{.ID}}">
<h2>{{.Scenario}}</h2>
<p class="meta">Started <b>{{.Started}}</b> · duration <b>{{.Duration}}</b></p>
{{if .Params}}<table class="params">
{{range .Params}}<tr><td>{{.K}}</td><td>{{.V}}</td></tr>
{{end}}</table>{{end}}
<div class="cards">
{{range .Cards}}<div class="card {{.Class}}"><div class="label">{{.Label}}</div><div class="value">{{.Value}}</div><div class="csub">{{.Sub}}</div></div>
{{end}}</div>
<div class="groups">
{{range .Groups}}<div><h3>{{.Title}}</h3><table>
{{range .Rows}}<tr><td>{{.Label}}</td><td class="num {{.Class}}">{{.Value}}</td></tr>
{{end}}</table></div>
{{end}}</div>
{{if or .Errors .ConnectFail}}<div class="kinds">
{{if .Errors}}<div><h3>Errors by kind</h3><table>
{{range .Errors}}<tr><td>{{.K}}</td><td class="num">{{.V}}</td></tr>
{{end}}</table></div>{{end}}
{{if .ConnectFail}}<div><h3>Connect failures by reason</h3><table>
{{range .ConnectFail}}<tr><td>{{.K}}</td><td class="num">{{.V}}</td></tr>
{{end}}</table></div>{{end}}
</div>{{end}}
{{if .Notes}}<h3>Notes</h3>
<ul class="notes">
{{range .Notes}}<li>{{.}}</li>
{{end}}</ul>{{end}}
{{if .Charts}}{{range .Charts}}<figure>
<h3>{{.Title}}</h3>
{{.SVG}}
</figure>
{{end}}{{else}}<p class="empty">No timeline was recorded.</p>{{end}}
</section>
{{end}}
</main>
</body>
</html>
`))

// ---- charts ----

// Okabe–Ito colours, distinguishable with the common colour blindnesses.
const (
	colBlue   = "#0072B2"
	colOrange = "#E69F00"
	colRed    = "#D55E00"
	colGreen  = "#009E73"
	colPurple = "#8E44AD"
)

type chartSeries struct {
	Name   string
	Color  string
	Dash   string    // stroke-dasharray, "" for a solid line
	Values []float64 // NaN leaves a gap
}

type chart struct {
	Title   string
	YTitle  string
	Integer bool // the y values are counts: no fractional ticks
	X       []float64
	Series  []chartSeries
	// Hover returns the tooltip for point i.
	Hover func(i int) string
	// FormatY formats a y tick value.
	FormatY func(v float64, step float64) string
}

// timelineCharts draws the throughput, latency and connections charts of a
// timeline.
func timelineCharts(ps []Point) []htmlChart {
	if len(ps) == 0 {
		return nil
	}
	n := len(ps)
	xs := make([]float64, n)
	deliv := make([]float64, n)
	sent := make([]float64, n)
	errs := make([]float64, n)
	conns := make([]float64, n)
	p50 := make([]float64, n)
	p99 := make([]float64, n)
	pmax := make([]float64, n)
	var anyErr, anySent, anyLat bool
	var maxLat time.Duration
	for i, p := range ps {
		xs[i] = float64(p.Second)
		deliv[i] = float64(p.Deliveries)
		sent[i] = float64(p.Sent)
		errs[i] = float64(p.Errors)
		conns[i] = float64(p.Connections)
		anyErr = anyErr || p.Errors != 0
		anySent = anySent || p.Sent != 0
		if p.Latency.Count == 0 {
			p50[i], p99[i], pmax[i] = math.NaN(), math.NaN(), math.NaN()
			continue
		}
		anyLat = true
		maxLat = max(maxLat, p.Latency.Max, p.Latency.P99, p.Latency.P50)
	}
	unit, unitName := latencyUnit(maxLat)
	for i, p := range ps {
		if p.Latency.Count > 0 {
			p50[i] = float64(p.Latency.P50) / float64(unit)
			p99[i] = float64(p.Latency.P99) / float64(unit)
			pmax[i] = float64(p.Latency.Max) / float64(unit)
		}
	}

	tput := chart{
		Title:   "Throughput",
		YTitle:  "messages per second",
		Integer: true,
		X:       xs,
		Series:  []chartSeries{{Name: "delivered/s", Color: colBlue, Values: deliv}},
		FormatY: fmtTick,
		Hover: func(i int) string {
			s := fmt.Sprintf("t = %ds\ndelivered %s/s", ps[i].Second, fmtCount(ps[i].Deliveries))
			if anySent {
				s += "\nsent " + fmtCount(ps[i].Sent) + "/s"
			}
			return s
		},
	}
	if anySent {
		// Dashed and on top, so that it shows where it equals delivered/s.
		tput.Series = append(tput.Series, chartSeries{Name: "sent/s", Color: colOrange, Dash: "6 4", Values: sent})
	}
	out := []htmlChart{{Title: tput.Title, SVG: tput.svg()}}

	if anyLat {
		lc := chart{
			Title:  "Latency per second",
			YTitle: "latency (" + unitName + ")",
			X:      xs,
			Series: []chartSeries{
				{Name: "p50", Color: colGreen, Values: p50},
				{Name: "p99", Color: colBlue, Values: p99},
				{Name: "max", Color: colRed, Values: pmax},
			},
			FormatY: fmtTick,
			Hover: func(i int) string {
				q := ps[i].Latency
				if q.Count == 0 {
					return fmt.Sprintf("t = %ds\nno deliveries", ps[i].Second)
				}
				return fmt.Sprintf("t = %ds\np50 %s\np99 %s\nmax %s\nn = %s", ps[i].Second,
					fmtDuration(q.P50), fmtDuration(q.P99), fmtDuration(q.Max), fmtCount(q.Count))
			},
		}
		out = append(out, htmlChart{Title: lc.Title, SVG: lc.svg()})
	}

	cc := chart{
		Title:   "Connections",
		YTitle:  "open connections",
		Integer: true,
		X:       xs,
		Series:  []chartSeries{{Name: "open", Color: colPurple, Values: conns}},
		FormatY: fmtTick,
		Hover: func(i int) string {
			return fmt.Sprintf("t = %ds\n%s open", ps[i].Second, fmtCount(ps[i].Connections))
		},
	}
	out = append(out, htmlChart{Title: cc.Title, SVG: cc.svg()})

	// Errors get their own chart: a burst of thousands would flatten the
	// throughput chart, and a trickle would vanish in it.
	if anyErr {
		ec := chart{
			Title:   "Errors",
			YTitle:  "errors per second",
			Integer: true,
			X:       xs,
			Series:  []chartSeries{{Name: "errors/s", Color: colRed, Values: errs}},
			FormatY: fmtTick,
			Hover: func(i int) string {
				return fmt.Sprintf("t = %ds\n%s errors", ps[i].Second, fmtCount(ps[i].Errors))
			},
		}
		out = append(out, htmlChart{Title: ec.Title, SVG: ec.svg()})
	}
	return out
}

// latencyUnit picks the unit a latency axis reaching maxLat is drawn in.
func latencyUnit(maxLat time.Duration) (time.Duration, string) {
	switch {
	case maxLat < time.Millisecond:
		return time.Microsecond, "µs"
	case maxLat < time.Second:
		return time.Millisecond, "ms"
	}
	return time.Second, "s"
}

// Chart geometry, in SVG user units.
const (
	chartW      = 1000
	chartH      = 280
	chartLeft   = 76
	chartRight  = 24
	chartTop    = 34
	chartBottom = 46
)

func (c chart) svg() template.HTML {
	pw := float64(chartW - chartLeft - chartRight)
	ph := float64(chartH - chartTop - chartBottom)

	// X range: seconds, at least one.
	xMax := 1.0
	for _, x := range c.X {
		xMax = max(xMax, x)
	}
	xStep, xTop := niceScale(xMax, 10, true, timeSteps)
	if xTop < xMax {
		xTop = xMax
	}
	// Y range: from zero to a round number above the largest value.
	yMax := 0.0
	for _, s := range c.Series {
		for _, v := range s.Values {
			if !math.IsNaN(v) {
				yMax = max(yMax, v)
			}
		}
	}
	if yMax <= 0 {
		yMax = 1
	}
	// A little headroom, so that a line at the maximum does not run
	// along the top edge.
	yStep, yTop := niceScale(yMax*1.04, 5, c.Integer, nil)

	px := func(x float64) float64 { return chartLeft + x/xTop*pw }
	py := func(y float64) float64 { return chartTop + ph - y/yTop*ph }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" role="img" aria-label="%s">`,
		chartW, chartH, html.EscapeString(c.Title))
	fmt.Fprintf(&b, `<title>%s</title>`, html.EscapeString(c.Title))
	b.WriteString(`<g font-size="12" fill="#57606a">`)

	// Horizontal grid lines and y tick labels.
	for i := 0; ; i++ {
		v := float64(i) * yStep
		if v > yTop*(1+1e-9) {
			break
		}
		y := py(v)
		stroke := "#e6e9ed"
		if i == 0 {
			stroke = "#8c959f"
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`, px(0), y, px(xTop), y, stroke)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`,
			chartLeft-8, y, html.EscapeString(c.FormatY(v, yStep)))
	}
	// Vertical axis line and x ticks.
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#8c959f"/>`, px(0), chartTop, px(0), py(0))
	for i := 0; ; i++ {
		v := float64(i) * xStep
		if v > xTop*(1+1e-9) {
			break
		}
		x := px(v)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#8c959f"/>`, x, py(0), x, py(0)+5)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`,
			x, py(0)+19, html.EscapeString(fmtSeconds(v, xTop)))
	}
	// Axis titles.
	xTitle := "time since start (s)"
	if xTop >= 600 {
		xTitle = "time since start (min:s)"
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#1f2328">%s</text>`,
		chartLeft+pw/2, chartH-6, html.EscapeString(xTitle))
	fmt.Fprintf(&b, `<text transform="translate(16 %.1f) rotate(-90)" text-anchor="middle" fill="#1f2328">%s</text>`,
		chartTop+ph/2, html.EscapeString(c.YTitle))
	b.WriteString(`</g>`)

	// Series.
	markers := len(c.X) <= 30
	for _, s := range c.Series {
		var d strings.Builder
		pen := false
		var lone [][2]float64 // points with no neighbour to join
		for i, v := range s.Values {
			if i >= len(c.X) {
				break
			}
			if math.IsNaN(v) {
				pen = false
				continue
			}
			x, y := px(c.X[i]), py(v)
			if pen {
				fmt.Fprintf(&d, "L%.1f %.1f", x, y)
			} else {
				fmt.Fprintf(&d, "M%.1f %.1f", x, y)
			}
			nextGap := i+1 >= len(s.Values) || i+1 >= len(c.X) || math.IsNaN(s.Values[i+1])
			if !pen && nextGap || markers {
				lone = append(lone, [2]float64{x, y})
			}
			pen = true
		}
		fmt.Fprintf(&b, `<g><title>%s</title>`, html.EscapeString(s.Name))
		if d.Len() > 0 {
			fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="1.8" stroke-linejoin="round" stroke-linecap="round"%s/>`,
				d.String(), s.Color, dashAttr(s.Dash))
		}
		for _, p := range lone {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="2.6" fill="%s"/>`, p[0], p[1], s.Color)
		}
		b.WriteString(`</g>`)
	}

	// Legend, above the plot, right-aligned.
	const swatch, gap = 18, 16
	legendW := 0.0
	for _, s := range c.Series {
		legendW += swatch + 6 + textWidth(s.Name) + gap
	}
	lx := chartLeft + pw - legendW + gap
	b.WriteString(`<g font-size="12" fill="#1f2328">`)
	for _, s := range c.Series {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="14" x2="%.1f" y2="14" stroke="%s" stroke-width="3"%s/>`,
			lx, lx+swatch, s.Color, dashAttr(s.Dash))
		fmt.Fprintf(&b, `<text x="%.1f" y="14" dominant-baseline="middle">%s</text>`, lx+swatch+6, html.EscapeString(s.Name))
		lx += swatch + 6 + textWidth(s.Name) + gap
	}
	b.WriteString(`</g>`)

	// Hover bands with a tooltip per second: no script needed.
	if c.Hover != nil && len(c.X) <= 1200 {
		bw := pw / (xTop + 1)
		b.WriteString(`<g class="hover">`)
		for i, x := range c.X {
			left := max(px(x)-bw/2, chartLeft)
			right := min(px(x)+bw/2, chartLeft+pw)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%.1f"><title>%s</title></rect>`,
				left, chartTop, max(right-left, 0.5), ph, html.EscapeString(c.Hover(i)))
		}
		b.WriteString(`</g>`)
	}
	b.WriteString(`</svg>`)
	// Every text in it went through html.EscapeString.
	return template.HTML(b.String())
}

// dashAttr returns the stroke-dasharray attribute for dash, or "".
func dashAttr(dash string) string {
	if dash == "" {
		return ""
	}
	return ` stroke-dasharray="` + html.EscapeString(dash) + `"`
}

// textWidth estimates the width of s in 12px sans-serif.
func textWidth(s string) float64 {
	return float64(len([]rune(s))) * 7
}

// timeSteps are the x-axis steps, in seconds, that read well as times.
var timeSteps = []float64{1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200}

// niceScale returns a round tick step for an axis from 0 to maxV with about
// ticks ticks, and the top of the axis: the first multiple of the step at
// or above maxV. With integer, the step is at least 1. steps, if given,
// lists the allowed steps.
func niceScale(maxV float64, ticks int, integer bool, steps []float64) (step, top float64) {
	raw := maxV / float64(ticks)
	if steps != nil {
		step = steps[len(steps)-1]
		for _, s := range steps {
			if s >= raw {
				step = s
				break
			}
		}
		for step*float64(ticks)*3 < maxV { // beyond the list: grow by tens
			step *= 10
		}
	} else {
		mag := math.Pow(10, math.Floor(math.Log10(raw)))
		for _, m := range []float64{1, 2, 2.5, 5, 10} {
			step = m * mag
			if step >= raw {
				break
			}
		}
	}
	if integer && step < 1 {
		step = 1
	}
	top = math.Ceil(maxV/step-1e-9) * step
	if top <= 0 {
		top = step
	}
	return step, top
}

// fmtTick formats a y tick value v on an axis with ticks step apart: "0",
// "2.5", "750", "12k", "1.5M".
func fmtTick(v, step float64) string {
	if v == 0 {
		return "0"
	}
	div, suffix := 1.0, ""
	switch {
	case v >= 1e9:
		div, suffix = 1e9, "G"
	case v >= 1e6:
		div, suffix = 1e6, "M"
	case v >= 1e3:
		div, suffix = 1e3, "k"
	}
	v, step = v/div, step/div
	prec := 0
	if step < 1 {
		prec = int(math.Ceil(-math.Log10(step) - 1e-9))
		if math.Abs(step*math.Pow(10, float64(prec))-math.Round(step*math.Pow(10, float64(prec)))) > 1e-9 {
			prec++ // 2.5, 0.25
		}
	}
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s + suffix
}

// fmtSeconds formats an x tick: seconds, or minutes:seconds on an axis
// reaching ten minutes.
func fmtSeconds(v, top float64) string {
	s := int64(math.Round(v))
	if top < 600 {
		return strconv.FormatInt(s, 10)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
