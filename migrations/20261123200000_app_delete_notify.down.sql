DROP TRIGGER apps_notify_deleted ON apps;
DROP FUNCTION notify_app_deleted();
