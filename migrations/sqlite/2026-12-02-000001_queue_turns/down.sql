DROP TABLE queue_turns;
