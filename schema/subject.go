package schema

// SubjectStrategy names the registry subject under which the value schema
// of a topic's events is registered, as the Confluent serializers'
// subject.name.strategy does.
type SubjectStrategy func(topic string, s *Schema) string

// TopicNameStrategy returns "<topic>-value": one subject, so one evolving
// schema, per topic. It is the default of the Confluent serializers and of
// choreo.
func TopicNameStrategy(topic string, _ *Schema) string { return topic + "-value" }

// RecordNameStrategy returns the schema's full name: one subject per event
// type, shared by every topic that carries it, so a topic may carry
// several event types.
func RecordNameStrategy(_ string, s *Schema) string { return s.FullName() }

// TopicRecordNameStrategy returns "<topic>-<full name>": one subject per
// event type and topic.
func TopicRecordNameStrategy(topic string, s *Schema) string { return topic + "-" + s.FullName() }
