"""matchbox's Go templates rendered natively: table-driven from Go's text/template rules
(missingkey=error, Go's printing of JSON numbers) and the shapes matchbox's docs show."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.bootcfg.gotemplate import GoTemplateError, StringMap, go_float, parse

# The variables matchbox builds for /generic?mac=52-54-00-89-d8-10&foo=some-param&bar=b
# against a group like docs/matchbox.md's node1 (metadata, selectors, request).
DATA: dict[str, Any] = {
    "etcd_name": "node1",
    "port": 2379.0,
    "big": 1000000.0,
    "ratio": 0.5,
    "ssh": True,
    "off": False,
    "nothing": None,
    "empty": "",
    "keys": ["ssh-ed25519 AAA a", "ssh-ed25519 BBB b"],
    "nolist": [],
    "nested": {"zone": {"name": "z1"}, "count": 2.0},
    "mac": "52:54:00:89:d8:10",
    "request": {
        "query": StringMap(mac="52:54:00:89:d8:10", foo="some-param", bar="b", os=""),
        "raw_query": "mac=52-54-00-89-d8-10&foo=some-param&bar=b&os=",
    },
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # field access, as in matchbox's docs
        ("{{.mac}}", "52:54:00:89:d8:10"),
        ("{{.etcd_name}}", "node1"),
        ("{{.request.query.foo}} {{.request.query.bar}}", "some-param b"),
        ("{{.request.raw_query}}", "mac=52-54-00-89-d8-10&foo=some-param&bar=b&os="),
        ("{{.nested.zone.name}}", "z1"),
        ("{{$.nested.zone.name}}", "z1"),
        # JSON numbers are float64 and print as Go prints them
        ("{{.port}} {{.big}} {{.ratio}} {{.nested.count}}", "2379 1e+06 0.5 2"),
        ("{{.ssh}} {{.off}} {{.nothing}}", "true false <no value>"),
        ("{{.keys}}", "[ssh-ed25519 AAA a ssh-ed25519 BBB b]"),
        ("{{.nested}}", "map[count:2 zone:map[name:z1]]"),
        # if / else if / else, Go truth
        ("{{if .ssh}}a{{else}}b{{end}}", "a"),
        ("{{if .empty}}a{{else}}b{{end}}", "b"),
        ("{{if .nothing}}a{{else if .off}}b{{else}}c{{end}}", "c"),
        ('{{if eq .request.query.os ""}}live{{else}}installed{{end}}', "live"),
        ('{{if eq .etcd_name "node2" "node1"}}one of{{end}}', "one of"),
        ('{{if ne .mac "x"}}ne{{end}}', "ne"),
        ("{{if and .ssh .mac}}both{{end}}{{if or .off .empty}}x{{else}}neither{{end}}",
         "bothneither"),
        ("{{if not .off}}not{{end}}", "not"),
        ("{{if lt 1 2}}lt{{end}}{{if ge .port 2379.0}}ge{{end}}", "ltge"),
        # range, with variables, else, break/continue
        ("{{range .keys}}- {{.}}\n{{end}}", "- ssh-ed25519 AAA a\n- ssh-ed25519 BBB b\n"),
        ("{{range $i, $k := .keys}}{{$i}}:{{$k}};{{end}}",
         "0:ssh-ed25519 AAA a;1:ssh-ed25519 BBB b;"),
        ("{{range $k, $v := .request.query}}{{$k}}={{$v}},{{end}}",
         "bar=b,foo=some-param,mac=52:54:00:89:d8:10,os=,"),
        ("{{range .nolist}}x{{else}}none{{end}}", "none"),
        ("{{range $i, $k := .keys}}{{if eq $i 1}}{{break}}{{end}}{{$k}}{{end}}",
         "ssh-ed25519 AAA a"),
        ("{{range .keys}}{{if eq . \"ssh-ed25519 AAA a\"}}{{continue}}{{end}}{{.}}{{end}}",
         "ssh-ed25519 BBB b"),
        ("{{with .nested.zone}}{{.name}}{{else}}no{{end}}", "z1"),
        ("{{with .empty}}x{{else}}empty{{end}}", "empty"),
        # index, len, slice
        ('{{index .request.query "foo"}}', "some-param"),
        # index ignores missingkey: the zero value of the map's element type
        ('{{index .request.query "absent"}}', ""),  # map[string]string
        ('{{index .nested "absent"}}', "<no value>"),  # map[string]interface{}
        ("{{index .keys 1}}", "ssh-ed25519 BBB b"),
        ('{{index .nested "zone" "name"}}', "z1"),
        ("{{len .keys}} {{len .mac}} {{len .request.query}}", "2 17 4"),
        ("{{slice .mac 0 8}}", "52:54:00"),
        # pipelines and the functions matchbox users write
        ('{{.mac | printf "%s-x"}}', "52:54:00:89:d8:10-x"),
        ('{{printf "%q" .etcd_name}} {{printf "%d/%v/%5s|" 3 .port "ab"}}',
         '"node1" 3/2379/   ab|'),
        ('{{printf "%.2f" .ratio}}', "0.50"),
        ("{{print .etcd_name 1 2}} {{println .ssh}}", "node11 2 true\n"),
        ('{{urlquery "a b&c=d"}} {{html "<x & \'y\'>"}} {{js "it\'s <b>"}}',
         "a+b%26c%3Dd &lt;x &amp; &#39;y&#39;&gt; it\\'s \\u003Cb\\u003E"),
        ("{{(index .keys 0) | len}}", "17"),
        ("{{(.nested.zone).name}}", "z1"),
        # variables and assignment
        ("{{$x := .etcd_name}}{{$x}}", "node1"),
        ("{{$x := 1}}{{if .ssh}}{{$x = 2}}{{end}}{{$x}}", "2"),
        # trim markers and comments
        ("a  {{- .etcd_name -}}  \n b", "anode1b"),
        ("{{/* a comment */}}x{{- /* trimmed */ -}} y", "xy"),
        ("{{`raw {{ string`}}", "raw {{ string"),
        ("no actions at all\n", "no actions at all\n"),
    ],
)  # fmt: skip
def test_renders_like_go(template: str, expected: str) -> None:
    assert parse(template, "t.tmpl").render(DATA) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        # missingkey=error: a missing key is an error, never an empty string
        ("{{.missing}}", 't.tmpl:1: executing: map has no entry for key "missing"'),
        ("\n\n{{.request.query.absent}}", 't.tmpl:3: executing: map has no entry for key "absent"'),
        ("{{.nothing.field}}", "nil pointer evaluating"),
        ("{{.mac.field}}", "can't evaluate field field in type string"),
        ("{{eq .port 2379}}", "incompatible types for comparison"),  # float64 vs int, as Go
        ("{{index .keys 5}}", "index out of range: 5"),
        ("{{$nope}}", "undefined variable: $nope"),
        ("{{range .mac}}{{end}}", "range can't iterate over"),
    ],
)
def test_render_errors_name_file_and_line(template: str, message: str) -> None:
    with pytest.raises(GoTemplateError, match=None) as info:
        parse(template, "t.tmpl").render(DATA)
    assert message in str(info.value)
    assert str(info.value).startswith("t.tmpl:")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{.mac", "t.tmpl:1: unclosed action"),
        ("x\n{{if .ssh}}", "t.tmpl:2: unexpected EOF: this {{if}} has no {{end}}"),
        ("{{end}}", "t.tmpl:1: unexpected {{end}}"),
        ("{{else}}", "t.tmpl:1: unexpected {{else}}"),
        ("{{if}}{{end}}", "t.tmpl:1: missing value for if"),
        ("{{nosuch .mac}}", 't.tmpl:1: function "nosuch" not defined'),
        ('{{template "x"}}', "{{template}} is not supported"),
        ('{{define "x"}}{{end}}', "{{define}} is not supported"),
        ("{{break}}", "{{break}} outside {{range}}"),
        ("{{/* open", "unclosed"),
        ("{{.a | 3}}", "non executable command in pipeline stage"),
        ("{{(.a}}", "unclosed left paren"),
    ],
)
def test_parse_errors_name_file_and_line(template: str, message: str) -> None:
    with pytest.raises(GoTemplateError) as info:
        parse(template, "t.tmpl")
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, "0"),
        (1.0, "1"),
        (-2.5, "-2.5"),
        (123456.0, "123456"),
        (999999.0, "999999"),
        (1e6, "1e+06"),
        (1234567.0, "1.234567e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1e21, "1e+21"),
        (608863452348.1149, "6.088634523481149e+11"),
        (0.1, "0.1"),
    ],
)
def test_float_printing_is_gos(value: float, expected: str) -> None:
    assert go_float(value) == expected


def test_output_is_bounded() -> None:
    template = parse("{{range .a}}{{range $.a}}" + "x" * 1000 + "{{end}}{{end}}", "t")
    with pytest.raises(GoTemplateError, match="output larger than"):
        template.render({"a": list(range(100))})
