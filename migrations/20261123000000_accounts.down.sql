DROP TABLE sessions;
DROP TABLE login_links;
DROP TABLE api_tokens;
DROP TABLE team_members;
DROP TABLE teams;
DROP TABLE users;
