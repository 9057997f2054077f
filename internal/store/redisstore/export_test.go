package redisstore

// StreamKeys returns the keys of stream: meta, msgs, ids, acks.
func (s *Store) StreamKeys(stream string) [4]string {
	k := s.keys.stream(stream)
	return [4]string{k[keyMeta], k[keyMsgs], k[keyIDs], k[keyAcks]}
}
