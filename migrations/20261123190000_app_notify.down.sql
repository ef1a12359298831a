DROP TRIGGER apps_notify_desired_state ON apps;
DROP FUNCTION notify_app_desired_state();
