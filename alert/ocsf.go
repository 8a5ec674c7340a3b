package alert

import (
	"context"
	"encoding/json"
	"strings"
)

// OCSFVersion is the OCSF schema version the Detection Findings declare:
// the version of the schema snapshot their tests check every finding
// against (attribute by attribute: requirement, type, enum). A consumer
// that wants another version should check the mapping against it first.
const OCSFVersion = "1.9.0-dev"

// Formats a sink can send: the alert v1 object, or an OCSF Detection
// Finding.
const (
	FormatV1   = "v1"
	FormatOCSF = "ocsf"
)

// OCSF class and activity of an encwatch finding: a Detection Finding
// (category Findings, 2) being created.
const (
	ocsfCategory = 2
	ocsfClass    = 2004
	ocsfCreate   = 1
)

// OCSFFinding is an alert as an OCSF Detection Finding (class_uid 2004).
type OCSFFinding struct {
	ActivityID   int    `json:"activity_id"`
	ActivityName string `json:"activity_name"`
	CategoryUID  int    `json:"category_uid"`
	CategoryName string `json:"category_name"`
	ClassUID     int    `json:"class_uid"`
	ClassName    string `json:"class_name"`
	TypeUID      int64  `json:"type_uid"`
	TypeName     string `json:"type_name"`
	SeverityID   int    `json:"severity_id"`
	Severity     string `json:"severity"`
	StatusID     int    `json:"status_id"`
	Status       string `json:"status"`
	Time         int64  `json:"time"` // ms since the epoch
	Message      string `json:"message"`
	IsAlert      bool   `json:"is_alert"`
	Count        int    `json:"count,omitempty"`

	Metadata    ocsfMetadata      `json:"metadata"`
	FindingInfo ocsfFindingInfo   `json:"finding_info"`
	Resources   []ocsfResource    `json:"resources"`
	Remediation *ocsfRemediation  `json:"remediation,omitempty"`
	Actor       *ocsfActor        `json:"actor,omitempty"` // host profile
	Cloud       *ocsfCloud        `json:"cloud,omitempty"` // cloud profile
	API         *ocsfAPI          `json:"api,omitempty"`   // cloud profile
	Unmapped    map[string]*Alert `json:"unmapped"`
}

type ocsfMetadata struct {
	Version      string      `json:"version"`
	Product      ocsfProduct `json:"product"`
	Profiles     []string    `json:"profiles,omitempty"`
	UID          string      `json:"uid"`
	LogName      string      `json:"log_name"`
	OriginalTime string      `json:"original_time,omitempty"`
}

type ocsfProduct struct {
	Name       string `json:"name"`
	VendorName string `json:"vendor_name"`
	Version    string `json:"version,omitempty"`
}

type ocsfFindingInfo struct {
	UID         string       `json:"uid"`
	Title       string       `json:"title"`
	Desc        string       `json:"desc"`
	Analytic    ocsfAnalytic `json:"analytic"`
	CreatedTime int64        `json:"created_time"`
	Types       []string     `json:"types,omitempty"`
}

type ocsfAnalytic struct {
	Name   string `json:"name"`
	UID    string `json:"uid"`
	Type   string `json:"type"`
	TypeID int    `json:"type_id"`
}

type ocsfResource struct {
	UID    string `json:"uid"`
	Name   string `json:"name"`
	Type   string `json:"type"`
	Region string `json:"region,omitempty"` // cloud profile
	Zone   string `json:"zone,omitempty"`   // cloud profile
	RoleID int    `json:"role_id"`
	Role   string `json:"role"`
}

type ocsfRemediation struct {
	Desc string `json:"desc"`
}

type ocsfAccount struct {
	UID    string `json:"uid"`
	Type   string `json:"type"`
	TypeID int    `json:"type_id"`
}

type ocsfUser struct {
	UID     string       `json:"uid"`
	Name    string       `json:"name,omitempty"`
	Type    string       `json:"type,omitempty"`
	Account *ocsfAccount `json:"account,omitempty"`
}

type ocsfActor struct {
	User ocsfUser `json:"user"`
}

type ocsfCloud struct {
	Provider string       `json:"provider"`
	Region   string       `json:"region,omitempty"`
	Account  *ocsfAccount `json:"account,omitempty"`
}

type ocsfAPI struct {
	Operation string      `json:"operation"`
	Service   ocsfService `json:"service"`
}

type ocsfService struct {
	Name string `json:"name"`
}

var ocsfSeverities = map[string]struct {
	id   int
	name string
}{
	"info": {1, "Informational"}, "low": {2, "Low"}, "medium": {3, "Medium"}, "high": {4, "High"}, "critical": {5, "Critical"},
}

func awsAccount(id string) *ocsfAccount {
	if id == "" {
		return nil
	}
	return &ocsfAccount{UID: id, Type: "AWS Account", TypeID: 10}
}

// OCSF maps an alert to an OCSF Detection Finding: finding_info.uid is the
// alert id, finding_info.analytic the rule, the bucket a resources[] entry
// with its ARN as uid, the caller actor.user, the event's API and cloud,
// and the whole alert v1 object under unmapped.alert. productVersion is
// encwatch's version.
func OCSF(a Alert, productVersion string) OCSFFinding {
	sev, ok := ocsfSeverities[a.Severity]
	if !ok {
		sev.id, sev.name = 0, "Unknown"
	}
	resType := "AWS::S3::Bucket"
	if a.Bucket.Type == "directory" {
		resType = "AWS::S3Express::DirectoryBucket"
	}
	ms := a.DetectedAt.UnixMilli()
	cp := a
	f := OCSFFinding{
		ActivityID: ocsfCreate, ActivityName: "Create", CategoryUID: ocsfCategory, CategoryName: "Findings",
		ClassUID: ocsfClass, ClassName: "Detection Finding", TypeUID: ocsfClass*100 + ocsfCreate, TypeName: "Detection Finding: Create",
		SeverityID: sev.id, Severity: sev.name, StatusID: 1, Status: "New", Time: ms, Message: a.Summary, IsAlert: true, Count: a.Count,
		Metadata: ocsfMetadata{Version: OCSFVersion, Product: ocsfProduct{Name: "encwatch", VendorName: "encwatch", Version: productVersion},
			UID: a.ID, LogName: "encwatch.alert/v1", OriginalTime: a.Event.Time},
		FindingInfo: ocsfFindingInfo{UID: a.ID, Title: a.Rule + ": " + firstLine(a.Summary), Desc: a.Summary, CreatedTime: ms,
			Analytic: ocsfAnalytic{Name: a.Rule, UID: a.Rule, Type: "Rule", TypeID: 1}, Types: []string{"basis:" + a.Basis}},
		Resources: []ocsfResource{{UID: a.Bucket.ARN, Name: a.Bucket.Name, Type: resType, Region: a.Bucket.Region, Zone: a.Bucket.Zone, RoleID: 1, Role: "Target"}},
		Cloud:     &ocsfCloud{Provider: "AWS", Region: firstNonEmpty(a.Bucket.Region, a.Event.Region), Account: awsAccount(a.Bucket.Account)},
		Unmapped:  map[string]*Alert{"alert": &cp},
	}
	profiles := []string{"cloud"}
	if a.Remediation != "" {
		f.Remediation = &ocsfRemediation{Desc: a.Remediation}
	}
	if a.Event.Name != "" {
		f.API = &ocsfAPI{Operation: a.Event.Name, Service: ocsfService{Name: firstNonEmpty(a.Event.Source, "s3.amazonaws.com")}}
	}
	if arn := a.Event.Actor.ARN; arn != "" {
		f.Actor = &ocsfActor{User: ocsfUser{UID: arn, Name: arn[strings.LastIndexAny(arn, "/:")+1:], Type: a.Event.Actor.Type,
			Account: awsAccount(a.Event.Actor.AccountID)}}
		profiles = append(profiles, "host")
	}
	f.Metadata.Profiles = profiles
	return f
}

func firstLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// MarshalFormat encodes an alert as a sink sends it: the alert v1 JSON, or
// the OCSF Detection Finding.
func MarshalFormat(a Alert, format, productVersion string) ([]byte, error) {
	if format == FormatOCSF {
		return json.Marshal(OCSF(a, productVersion))
	}
	return json.Marshal(a)
}

// Formatted sends what its sink gets in another format: the body of each
// delivery becomes the alert in Format.
type Formatted struct {
	Sink
	Format, Version string
}

// Send implements Sink.
func (f Formatted) Send(ctx context.Context, d Delivery) error {
	b, err := MarshalFormat(d.Alert, f.Format, f.Version)
	if err != nil {
		return Permanent(err)
	}
	d.Body = b
	return f.Sink.Send(ctx, d)
}

// Check implements Checker when the sink does.
func (f Formatted) Check(ctx context.Context) error {
	if c, ok := f.Sink.(Checker); ok {
		return c.Check(ctx)
	}
	return nil
}

// Close closes the sink when it has a Close.
func (f Formatted) Close() error {
	if c, ok := f.Sink.(interface{ Close() error }); ok {
		return c.Close()
	}
	return nil
}
