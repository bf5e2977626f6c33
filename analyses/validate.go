package analyses

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// FieldError is an invalid analysis: the JSON path of the failing field and why. It is
// answered as 400 {"error":{"code":"invalid_field","message":"<field>: <reason>","field":"<field>"}}.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Threat levels of result.threatLevel.
var threatLevels = []string{"low", "medium", "high", "critical"}

// Input is the body of POST /api/{tool}/analyses.
type Input struct {
	IPAddress *string         `json:"ipAddress"`
	Result    json.RawMessage `json:"result"`
	Metadata  json.RawMessage `json:"metadata"`
}

// ipResultIn is the seed's IPAnalysis result as it arrives: pointers tell missing from zero.
type ipResultIn struct {
	RiskScore    *float64 `json:"riskScore"`
	IsProxy      *bool    `json:"isProxy"`
	IsVPN        *bool    `json:"isVPN"`
	IsTor        *bool    `json:"isTor"`
	IsDatacenter *bool    `json:"isDatacenter"`
	IsBot        *bool    `json:"isBot"`
	Country      *string  `json:"country"`
	CountryCode  *string  `json:"countryCode"`
	City         *string  `json:"city"`
	Region       *string  `json:"region"`
	Latitude     *float64 `json:"latitude"`
	Longitude    *float64 `json:"longitude"`
	Timezone     *string  `json:"timezone"`
	ISP          *string  `json:"isp"`
	Organization *string  `json:"organization"`
	ASN          *int64   `json:"asn"`
	ThreatLevel  *string  `json:"threatLevel"`
}

type metadataIn struct {
	ProcessingTime *float64 `json:"processingTime"`
	ModelVersion   *string  `json:"modelVersion"`
	Confidence     *float64 `json:"confidence"`
}

// valid is a validated analysis, ready to store.
type valid struct {
	ip          string
	result      bson.D
	metadata    bson.D
	riskScore   float64
	threatLevel string
	countryCode string
	threats     []string
	procTime    float64
}

var (
	countryCodeRe = regexp.MustCompile(`^[A-Z]{2}$`)
	timezoneRe    = regexp.MustCompile(`^([A-Za-z_]+(/[A-Za-z0-9_+\-]+){0,2}|UTC|[+-]\d{2}:\d{2})$`)
	threatNameRe  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// decodeStrict decodes raw into v: no unknown fields, one value; errors name the field under
// prefix.
func decodeStrict(raw json.RawMessage, v any, prefix string) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, e := dec.Token(); !errors.Is(e, io.EOF) {
			return fieldErr(prefix, "must be a single JSON object")
		}
		return nil
	}
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typ) && typ.Field != "":
		return fieldErr(prefix+"."+typ.Field, "must be %s", jsonKind(typ.Type.String()))
	case errors.As(err, &typ):
		return fieldErr(prefix, "must be an object")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
		return fieldErr(prefix+"."+name, "is not a field of %s", prefix)
	default:
		return fieldErr(prefix, "is not valid JSON: %v", err)
	}
}

func jsonKind(goType string) string {
	switch strings.TrimPrefix(goType, "*") {
	case "float64":
		return "a number"
	case "int64":
		return "an integer"
	case "bool":
		return "true or false"
	case "string":
		return "a string"
	}
	return "of another type"
}

func isNull(raw json.RawMessage) bool {
	return len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null"
}

// validate checks an analysis of tool: for ipintel the seed's IPAnalysis result, for every
// other tool the common riskScore and threatLevel with the tool's own fields kept; for all,
// the metadata.
func validate(tool string, in *Input) (*valid, error) {
	v := &valid{}
	if in.IPAddress != nil {
		a, err := netip.ParseAddr(strings.TrimSpace(*in.IPAddress))
		if err != nil || a.Zone() != "" {
			return nil, fieldErr("ipAddress", "must be an IPv4 or IPv6 address")
		}
		v.ip = a.Unmap().String()
	} else if tool == "ipintel" {
		return nil, fieldErr("ipAddress", "is required")
	}
	if isNull(in.Result) {
		return nil, fieldErr("result", "is required")
	}
	var err error
	if tool == "ipintel" {
		err = v.ipResult(in.Result)
	} else {
		err = v.toolResult(in.Result)
	}
	if err != nil {
		return nil, err
	}
	if err := v.meta(in.Metadata); err != nil {
		return nil, err
	}
	return v, nil
}

func checkRisk(f *float64, field string) (float64, error) {
	if f == nil {
		return 0, fieldErr(field, "is required")
	}
	if math.IsNaN(*f) || *f < 0 || *f > 100 {
		return 0, fieldErr(field, "must be between 0 and 100")
	}
	return *f, nil
}

func checkLevel(s *string, field string) (string, error) {
	if s == nil {
		return "", fieldErr(field, "is required")
	}
	for _, l := range threatLevels {
		if *s == l {
			return l, nil
		}
	}
	return "", fieldErr(field, "must be one of low, medium, high, critical")
}

func (v *valid) ipResult(raw json.RawMessage) error {
	var r ipResultIn
	if err := decodeStrict(raw, &r, "result"); err != nil {
		return err
	}
	var err error
	if v.riskScore, err = checkRisk(r.RiskScore, "result.riskScore"); err != nil {
		return err
	}
	if v.threatLevel, err = checkLevel(r.ThreatLevel, "result.threatLevel"); err != nil {
		return err
	}
	for _, b := range []struct {
		name string
		p    *bool
	}{{"isProxy", r.IsProxy}, {"isVPN", r.IsVPN}, {"isTor", r.IsTor}, {"isDatacenter", r.IsDatacenter}, {"isBot", r.IsBot}} {
		if b.p == nil {
			return fieldErr("result."+b.name, "is required (true or false)")
		}
	}
	strs := []struct {
		name string
		p    *string
		max  int
	}{{"country", r.Country, 128}, {"countryCode", r.CountryCode, 2}, {"city", r.City, 128}, {"region", r.Region, 128},
		{"timezone", r.Timezone, 64}, {"isp", r.ISP, 256}, {"organization", r.Organization, 256}}
	for _, s := range strs {
		if s.p == nil {
			return fieldErr("result."+s.name, "is required (a string, empty when unknown)")
		}
		if len(*s.p) > s.max {
			return fieldErr("result."+s.name, "must be at most %d bytes", s.max)
		}
	}
	if *r.CountryCode != "" && !countryCodeRe.MatchString(*r.CountryCode) {
		return fieldErr("result.countryCode", "must be an ISO 3166-1 alpha-2 code such as US (or empty)")
	}
	if *r.Timezone != "" && !timezoneRe.MatchString(*r.Timezone) {
		return fieldErr("result.timezone", "must be an IANA time zone such as Europe/Berlin (or empty)")
	}
	if r.Latitude == nil {
		return fieldErr("result.latitude", "is required")
	}
	if *r.Latitude < -90 || *r.Latitude > 90 {
		return fieldErr("result.latitude", "must be between -90 and 90")
	}
	if r.Longitude == nil {
		return fieldErr("result.longitude", "is required")
	}
	if *r.Longitude < -180 || *r.Longitude > 180 {
		return fieldErr("result.longitude", "must be between -180 and 180")
	}
	if r.ASN == nil {
		return fieldErr("result.asn", "is required")
	}
	if *r.ASN < 0 || *r.ASN > math.MaxUint32 {
		return fieldErr("result.asn", "must be between 0 and 4294967295")
	}
	v.countryCode = *r.CountryCode
	for _, f := range []struct {
		name string
		on   bool
	}{{"proxy", *r.IsProxy}, {"vpn", *r.IsVPN}, {"tor", *r.IsTor}, {"datacenter", *r.IsDatacenter}, {"bot", *r.IsBot}} {
		if f.on {
			v.threats = append(v.threats, f.name)
		}
	}
	v.result = bson.D{
		{Key: "riskScore", Value: v.riskScore}, {Key: "isProxy", Value: *r.IsProxy}, {Key: "isVPN", Value: *r.IsVPN},
		{Key: "isTor", Value: *r.IsTor}, {Key: "isDatacenter", Value: *r.IsDatacenter}, {Key: "isBot", Value: *r.IsBot},
		{Key: "country", Value: *r.Country}, {Key: "countryCode", Value: *r.CountryCode}, {Key: "city", Value: *r.City},
		{Key: "region", Value: *r.Region}, {Key: "latitude", Value: *r.Latitude}, {Key: "longitude", Value: *r.Longitude},
		{Key: "timezone", Value: *r.Timezone}, {Key: "isp", Value: *r.ISP}, {Key: "organization", Value: *r.Organization},
		{Key: "asn", Value: *r.ASN}, {Key: "threatLevel", Value: v.threatLevel},
	}
	return nil
}

// maxDepth bounds the nesting of a tool's own result fields.
const maxDepth = 16

func (v *valid) toolResult(raw json.RawMessage) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return fieldErr("result", "must be an object")
	}
	doc, err := readObject(dec, "result", 1)
	if err != nil {
		return err
	}
	var rs *float64
	var tl *string
	for _, e := range doc {
		switch e.Key {
		case "riskScore":
			f, ok := toFloat(e.Value)
			if !ok {
				return fieldErr("result.riskScore", "must be a number")
			}
			rs = &f
		case "threatLevel":
			s, ok := e.Value.(string)
			if !ok {
				return fieldErr("result.threatLevel", "must be one of low, medium, high, critical")
			}
			tl = &s
		case "countryCode":
			if s, ok := e.Value.(string); ok && countryCodeRe.MatchString(s) {
				v.countryCode = s
			}
		case "threats":
			if a, ok := e.Value.(bson.A); ok {
				for _, x := range a {
					if s, ok := x.(string); ok && threatNameRe.MatchString(s) {
						v.threats = append(v.threats, s)
					}
				}
			}
		case "threatType":
			if s, ok := e.Value.(string); ok && threatNameRe.MatchString(s) {
				v.threats = append(v.threats, s)
			}
		}
	}
	if v.riskScore, err = checkRisk(rs, "result.riskScore"); err != nil {
		return err
	}
	if v.threatLevel, err = checkLevel(tl, "result.threatLevel"); err != nil {
		return err
	}
	for i := range doc {
		if doc[i].Key == "riskScore" {
			doc[i].Value = v.riskScore
		}
	}
	v.result = doc
	return nil
}

func toFloat(x any) (float64, bool) {
	switch n := x.(type) {
	case int64:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}

// readObject reads the rest of an object (after '{') into a bson.D, keeping the order of its
// fields. Names that MongoDB would misread (a leading $, a dot, NUL) are refused.
func readObject(dec *json.Decoder, path string, depth int) (bson.D, error) {
	if depth > maxDepth {
		return nil, fieldErr(path, "nests deeper than %d levels", maxDepth)
	}
	var doc bson.D
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fieldErr(path, "is not valid JSON")
		}
		key := tok.(string)
		field := path + "." + key
		if key == "" || strings.HasPrefix(key, "$") || strings.ContainsAny(key, ".\x00") || len(key) > 128 {
			return nil, fieldErr(field, "is not an allowed field name (no leading $, no dots, at most 128 bytes)")
		}
		if seen[key] {
			return nil, fieldErr(field, "appears twice")
		}
		seen[key] = true
		val, err := readValue(dec, field, depth)
		if err != nil {
			return nil, err
		}
		doc = append(doc, bson.E{Key: key, Value: val})
	}
	if _, err := dec.Token(); err != nil {
		return nil, fieldErr(path, "is not valid JSON")
	}
	return doc, nil
}

func readValue(dec *json.Decoder, path string, depth int) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, fieldErr(path, "is not valid JSON")
	}
	switch t := tok.(type) {
	case json.Delim:
		if t == '{' {
			return readObject(dec, path, depth+1)
		}
		if depth+1 > maxDepth {
			return nil, fieldErr(path, "nests deeper than %d levels", maxDepth)
		}
		arr := bson.A{}
		for i := 0; dec.More(); i++ {
			x, err := readValue(dec, fmt.Sprintf("%s[%d]", path, i), depth+1)
			if err != nil {
				return nil, err
			}
			arr = append(arr, x)
		}
		if _, err := dec.Token(); err != nil {
			return nil, fieldErr(path, "is not valid JSON")
		}
		return arr, nil
	case json.Number:
		if n, err := t.Int64(); err == nil {
			return n, nil
		}
		f, err := t.Float64()
		if err != nil {
			return nil, fieldErr(path, "is a number out of range")
		}
		return f, nil
	default:
		return t, nil // string, bool or nil
	}
}

func (v *valid) meta(raw json.RawMessage) error {
	if isNull(raw) {
		return fieldErr("metadata", "is required")
	}
	var m metadataIn
	if err := decodeStrict(raw, &m, "metadata"); err != nil {
		return err
	}
	switch {
	case m.ProcessingTime == nil:
		return fieldErr("metadata.processingTime", "is required (milliseconds)")
	case *m.ProcessingTime < 0 || *m.ProcessingTime > 3_600_000:
		return fieldErr("metadata.processingTime", "must be between 0 and 3600000 milliseconds")
	case m.ModelVersion == nil || *m.ModelVersion == "":
		return fieldErr("metadata.modelVersion", "is required")
	case len(*m.ModelVersion) > 64:
		return fieldErr("metadata.modelVersion", "must be at most 64 bytes")
	case m.Confidence == nil:
		return fieldErr("metadata.confidence", "is required")
	case *m.Confidence < 0 || *m.Confidence > 1:
		return fieldErr("metadata.confidence", "must be between 0 and 1")
	}
	v.procTime = *m.ProcessingTime
	v.metadata = bson.D{{Key: "processingTime", Value: *m.ProcessingTime}, {Key: "modelVersion", Value: *m.ModelVersion},
		{Key: "confidence", Value: *m.Confidence}}
	return nil
}
