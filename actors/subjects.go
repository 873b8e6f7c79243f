package actors

import "fmt"

// NATS subject naming scheme of the data plane. Every token is a job or
// operator name (letters, digits, '_' and '-') or a decimal index, so
// subjects never contain wildcards by accident.
//
//	mf.<job>.data.<from>.<to>.<i>.<j>    batches, watermarks, barriers and end-of-stream
//	                                     from instance i of operator <from> to
//	                                     instance j of operator <to>
//	mf.<job>.credit.<from>.<to>.<i>.<j>  flow-control credits, from receiver j back
//	                                     to sender i
//	mf.<job>.ctl.failure                 a node reports the job failed
//	mf.<job>.ctl.status                  status request; every node of the job
//	                                     answers for its instances (status.go)
//
// A job owned by a data-mesh domain has <domain>.<job> in place of <job>,
// so all of a domain's internal edges live under mf.<domain>.>, a namespace
// only the domain's NATS user may use.
// Edges between instances on the same node do not use NATS at all.
const subjectPrefix = "mf"

// DataSubject is the subject of the data-plane channel from instance i of
// operator from to instance j of operator to.
func DataSubject(job, from, to string, i, j int) string {
	return fmt.Sprintf("%s.%s.data.%s.%s.%d.%d", subjectPrefix, job, from, to, i, j)
}

// CreditSubject is the subject on which receiver j returns credits for the
// channel from sender i.
func CreditSubject(job, from, to string, i, j int) string {
	return fmt.Sprintf("%s.%s.credit.%s.%s.%d.%d", subjectPrefix, job, from, to, i, j)
}

// FailureSubject is the subject on which any node of a job reports that the
// job failed.
func FailureSubject(job string) string {
	return fmt.Sprintf("%s.%s.ctl.failure", subjectPrefix, job)
}

// JobSubjects is the wildcard covering all subjects of a job.
func JobSubjects(job string) string {
	return fmt.Sprintf("%s.%s.>", subjectPrefix, job)
}
