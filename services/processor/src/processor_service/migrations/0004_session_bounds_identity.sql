-- Replaces 0002's note on analytics.session_bounds (a checksum keeps that file as it was applied):
-- visitor ids no longer all come from a daily salt. A signed-in visitor (an event with a user_id)
-- keeps one id across days, so a session can span midnight; anonymous ids still change daily.
COMMENT ON TABLE analytics.session_bounds IS
    'The longest session span (ended_at - started_at) ever written; it only grows, in the transaction '
    'of the session that widened it. A session that could absorb an event at t starts at or after '
    't - 30 minutes - max_span: the lower time bound of every look-up of the writer. Activity bounds '
    'it, not the visitor ids: a session ends after 30 minutes without events. Anonymous ids change '
    'with the day''s salt; signed-in visitors keep theirs across days, so their sessions may cross '
    'midnight, and one active without a 30-minute pause for days widens the bound for every look-up '
    '(more chunks probed, never a wrong session).';
